"""What the engine hands a method each step besides the batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from byon.config import DataConfig
from byon.data.transforms import augment as augment_view
from byon.draws import Draw, seeded


def _no_augment(raw: Tensor) -> Tensor:
    raise RuntimeError("this StepContext has no augmentation: build it with `step_context(...)`")


@dataclass
class StepContext:
    """generator: the step's draws on the batch's device — in training a `byon.draws.SampleDraws`, one
    generator per sample seeded from (seed, global step, the sample's position in the global batch), so runs
    repeat exactly, resume needs no RNG state, and 1 or N processes draw the same; a plain `torch.Generator`
    works too (tests, eval). Corruptions draw through `byon.draws.rand`/`randn`/`randint`.
    progress: fraction of training done, in [0, 1].
    augment: the run's augmentation (data.crop_*, data.hflip), uint8 (B, C, H, W) → normalised float view,
    drawing from `generator`; a method that needs views of its own draws them with it."""

    generator: Draw
    step: int = 0
    epoch: int = 0
    progress: float = 0.0
    total_steps: int = 1
    augment: Callable[[Tensor], Tensor] = _no_augment


def step_context(data: DataConfig, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                 generator: Draw, step: int = 0, epoch: int = 0, total_steps: int = 1,
                 crop: bool = True) -> StepContext:
    """The context of step `step` of `total_steps`, its `augment` the run's (`data`, normalised by mean/std);
    crop=False when the batch was random-resized-cropped as it was decoded (streamed data)."""
    return StepContext(generator=generator, step=step, epoch=epoch, progress=step / total_steps,
                       total_steps=total_steps,
                       augment=partial(augment_view, cfg=data, mean=mean, std=std, generator=generator, crop=crop))


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on (seed, step, rank) (`byon.draws.seeded`); fine-tuning's
    one-process steps draw from it."""
    return seeded(seed, step, rank, device)
