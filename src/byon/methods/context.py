"""What the engine hands a method each step besides the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepContext:
    """generator: seeded from (seed, global step, rank) on the batch's device — every random draw of a
    corruption uses it, so runs repeat exactly and resume needs no RNG state.
    progress: fraction of training done, in [0, 1]."""

    generator: torch.Generator
    step: int = 0
    epoch: int = 0
    progress: float = 0.0
    total_steps: int = 1


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on (seed, step, rank)."""
    g = torch.Generator(device=device)
    # Large odd multipliers keep (seed, step, rank) triples from colliding.
    g.manual_seed((seed * 1_000_003 + step * 7_919 + rank * 104_729 + 12_345) % (2**63 - 1))
    return g
