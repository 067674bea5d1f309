"""Per-sample random draws, so a run draws the same crops, masks, noise and timesteps on any number of processes.

A training step's draws come from `SampleDraws`: one generator per sample, seeded from (seed, step, the sample's
position in the global batch), plus one `shared` generator for the few draws made once per batch (I-JEPA's block
sizes). A rank holding positions {r, r + W, …} of the global batch therefore draws exactly what one process
holding the whole batch draws for those samples. Every helper here also takes a plain `torch.Generator` (or None,
torch's global one), which draws the whole (B, …) tensor at once, as the corruption code's own tests and the
eval code use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def seeded(seed: int, step: int, key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on (seed, step, key)."""
    g = torch.Generator(device=device)
    # Large odd multipliers keep (seed, step, key) triples from colliding.
    g.manual_seed((seed * 1_000_003 + step * 7_919 + key * 104_729 + 12_345) % (2**63 - 1))
    return g


class SampleDraws:
    """The random streams of one step for the samples at global-batch `positions` (this rank's local batch,
    in order), on `device`. Draw with `rand`/`randn`/`randint` below: row i of a (B, …) draw comes from
    sample i's generator alone."""

    def __init__(self, seed: int, step: int, positions: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.positions = list(positions)
        self.generators = [seeded(seed, step, p, device) for p in self.positions]
        self.shared = seeded(seed, step, -1, device)  # the same on every rank: draws made once per batch

    def __len__(self) -> int:
        return len(self.generators)

    def per_sample(self, batch: int, fn: Callable[[torch.Generator], Tensor]) -> Tensor:
        """(B, …): fn(generator) of each sample, stacked."""
        if batch != len(self):
            raise ValueError(f"a per-sample draw for {batch} rows, but this step's local batch has {len(self)} "
                             f"samples; draw per sample and repeat or concatenate the result")
        return torch.stack([fn(g) for g in self.generators])


Draw = torch.Generator | SampleDraws | None


def draw_device(draw: Draw, default: torch.device | str = "cpu") -> torch.device:
    """Where `draw`'s tensors are made (a generator's own device; `default` for torch's global generator)."""
    return torch.device(default) if draw is None else draw.device


def shared(draw: Draw) -> torch.Generator | None:
    """The generator for a draw made once per batch: the same on every rank of a step."""
    return draw.shared if isinstance(draw, SampleDraws) else draw


def _continuous(fn: Callable[..., Tensor], draw: Draw, batch: int, size: tuple[int, ...],
                device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
    dev = device or draw_device(draw)
    if isinstance(draw, SampleDraws):
        return draw.per_sample(batch, lambda g: fn(size, generator=g, device=draw.device, dtype=dtype)).to(dev)
    return fn((batch, *size), generator=draw, device=dev, dtype=dtype)


def rand(draw: Draw, batch: int, *size: int, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None) -> Tensor:
    """(batch, *size) uniform [0, 1)."""
    return _continuous(torch.rand, draw, batch, size, device, dtype)


def randn(draw: Draw, batch: int, *size: int, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """(batch, *size) standard normal."""
    return _continuous(torch.randn, draw, batch, size, device, dtype)


def randint(draw: Draw, low: int, high: int, batch: int, *size: int,
            device: torch.device | str | None = None) -> Tensor:
    """(batch, *size) int64 uniform in [low, high)."""
    dev = device or draw_device(draw)
    if isinstance(draw, SampleDraws):
        return draw.per_sample(batch, lambda g: torch.randint(low, high, size, generator=g, device=draw.device)).to(dev)
    return torch.randint(low, high, (batch, *size), generator=draw, device=dev)
