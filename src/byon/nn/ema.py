"""EMA teacher: momentum schedules and the in-place update over (online, target) module pairs."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import nn


def cosine_momentum(base: float, end: float, progress: float) -> float:
    """BYOL: m = end − (end − base)·(cos(π·progress) + 1)/2, progress ∈ [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return end - (end - base) * (math.cos(math.pi * progress) + 1) / 2


def linear_momentum(base: float, end: float, progress: float) -> float:
    """I-JEPA: m rises linearly from base to end."""
    progress = min(max(progress, 0.0), 1.0)
    return base + (end - base) * progress


def make_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of `online` to serve as EMA target."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float | torch.Tensor) -> None:
    """target ← m·target + (1−m)·online for every parameter; buffers (e.g. BN stats) are copied.
    A 0-dim tensor momentum on the parameters' device is applied without reading it on the host."""
    for online, target in pairs:
        o_params = [p for p in online.parameters()]
        t_params = [p for p in target.parameters()]
        if torch.is_tensor(momentum):  # _foreach_lerp_ would take it as a Scalar (.item(): a device sync)
            delta = torch._foreach_sub([p.detach() for p in o_params], t_params)
            torch._foreach_mul_(delta, 1.0 - momentum)
            torch._foreach_add_(t_params, delta)
        else:
            torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)
        for ob, tb in zip(online.buffers(), target.buffers()):
            tb.copy_(ob)
