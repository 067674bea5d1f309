"""AdamW parameter groups (MAE-style no-decay), per-step warm-up + cosine schedules."""

from __future__ import annotations

import math

from torch import nn


def no_decay_names(model: nn.Module) -> set[str]:
    """Full names that submodules list in `no_weight_decay()` (tokens, positional embeddings)."""
    names: set[str] = set()
    for prefix, mod in model.named_modules():
        fn = getattr(mod, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weight matrices; undecayed biases, norms, 1-D params and listed tokens."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "apply_wd_schedule": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd_schedule": False},
    ]


def warmup_cosine(step: int, total: int, warmup: int, base: float, final: float = 0.0) -> float:
    """Linear warm-up to `base` over `warmup` steps, then half-cycle cosine down to `final`."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` to `end` over `total` steps (I-JEPA's weight-decay schedule)."""
    progress = min(step / max(total, 1), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
