"""I-JEPA's multi-block masks (Assran et al. 2023, §3 and the official `masks/multiblock.py`).

Per image: `num_targets` (possibly overlapping) target blocks and one context block, the context minus
every target. Block sizes are drawn once per batch (as the official collator does, so every target block
holds the same h·w tokens); positions per image. All images keep the same number of context tokens, the
batch minimum k, so the context encoder runs on one (B, k) tensor.

Truncation (`truncate`): the official collator keeps each image's first k context indices in raster order,
so the tokens it drops are always the bottom rows of each context. The counts spread widely across a batch
(a context block minus four targets), so at batch 256 about a third of the drawn context is dropped (36% on
7×7, 40% on 14×14). The official code lives with the bias at 14×14; on our 7×7 grids one row is a seventh of
the image, and raster truncation keeps the bottom row only 9% of the times it is drawn (the second-last 37%,
the top rows ~100%): the context encoder rarely sees the bottom of the image, and the targets there rarely
have context nearby. "random" (our default) keeps a uniformly random k-subset of each image's context,
returned in raster order, so every row keeps the same share (~65%); "raster" reproduces the official rule.

Where the masks are made: I-JEPA builds them in the DataLoader's collate step from a generator seeded by a
shared step counter. Our loader (`data/loader.py`) yields in-memory batches and every draw of a step comes
from `ctx.generator`, one generator per sample keyed to its place in the global batch (`byon.draws`) — so
the methods call `sample` at the start of their forward, batched on the batch's device. The block sizes are
drawn once per batch (its `shared` generator), the blocks per image; the masks are a function of the
generators' states and the batch size only (not of the worker, the process, the global RNG or the data),
except that the context keep count is the minimum over the local batch. `__call__` is the same thing in
collate-function form for DataLoader pipelines, given a generator per batch (e.g. `byon.draws.seeded(seed,
step, 0)` for the batch's step — one generator shared by forked workers would repeat its masks).

Two deliberate departures from the official code, which matter on small grids: block corners are drawn
from the whole valid range [0, H − h] (the official `randint(0, H − h)` excludes the last row/column, which
on a 7×7 grid would never show them to the context encoder) and blocks may span the grid (h ≤ H, not
h < H); block scale and aspect are independent draws (the paper), not one shared uniform (the code).
The official retry rule is kept: a context with ≤ min_keep tokens is redrawn, and after `tries` failures
one more target's exclusion is dropped (`relaxed` counts them per image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from byon.draws import Draw, draw_device, rand, randint, shared
from byon.errors import ByonError, unknown

TRUNCATIONS = ("random", "raster")


@dataclass
class MultiBlockMasks:
    """context: (B, K_c) long, sorted indices of the patches the context encoder sees;
    targets: (B, M, K_t) long, each target block's patch indices in raster order;
    relaxed: (B,) long, how many targets the context was allowed to overlap (0 unless retries ran out);
    context_mask: (B, N) bool, each image's context before the truncation to the batch minimum (a superset
    of `context`'s indices)."""

    context: Tensor
    targets: Tensor
    relaxed: Tensor
    context_mask: Tensor

    @property
    def num_targets(self) -> int:
        return self.targets.shape[1]


def block_size(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
    """The official rule: keep = int(H·W·scale), h = round(sqrt(keep·aspect)), w = round(sqrt(keep/aspect)),
    clamped to [1, H] × [1, W]. aspect is h/w."""
    H, W = grid
    keep = int(H * W * scale)
    h = int(round(math.sqrt(keep * aspect)))
    w = int(round(math.sqrt(keep / aspect)))
    return min(max(h, 1), H), min(max(w, 1), W)


def _check_range(r: Sequence[float], name: str, lo: float, hi: float) -> None:
    if len(r) != 2 or not lo < r[0] <= r[1] <= hi:
        raise ByonError(f"{name} must be two numbers with {lo} < min ≤ max ≤ {hi}, got {tuple(r)}")


class MultiBlockMaskCollator:
    """`sample(B, generator)` → MultiBlockMasks for a (H, W) token grid; `__call__(samples, generator)` →
    (default_collate(samples), masks). Defaults are I-JEPA's: 4 targets of scale (0.15, 0.2), aspect
    (0.75, 1.5); one context of scale (0.85, 1.0), aspect 1; min_keep = 10 at 14×14 — pass a smaller one
    for small grids (it must stay below the smallest possible target block). truncate: "random" (ours) or
    "raster" (official), see the module docstring."""

    def __init__(self, grid: int | tuple[int, int], num_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), context_aspect: tuple[float, float] = (1.0, 1.0),
                 min_keep: int = 10, allow_overlap: bool = False, tries: int = 20, truncate: str = "random",
                 name: str = "multiblock") -> None:
        self.grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        if num_targets < 1:
            raise ByonError(f"{name}.num_targets must be at least 1, got {num_targets}")
        if truncate not in TRUNCATIONS:
            raise unknown(f"{name}.truncate", truncate, TRUNCATIONS)
        self.truncate = truncate
        _check_range(target_scale, f"{name}.target_scale", 0.0, 1.0)
        _check_range(context_scale, f"{name}.context_scale", 0.0, 1.0)
        _check_range(target_aspect, f"{name}.target_aspect", 0.0, math.inf)
        _check_range(context_aspect, f"{name}.context_aspect", 0.0, math.inf)
        if min_keep < 0 or tries < 1:
            raise ByonError(f"{name}.min_keep must be ≥ 0 (got {min_keep}) and tries ≥ 1 (got {tries})")
        self.num_targets, self.min_keep, self.allow_overlap, self.tries = num_targets, min_keep, allow_overlap, tries
        self.target_scale, self.target_aspect = tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.context_aspect = tuple(context_scale), tuple(context_aspect)
        # the official sampler loops forever when a block can hold ≤ min_keep tokens: refuse up front
        for what, s, a in (("target", target_scale, target_aspect), ("context", context_scale, context_aspect)):
            smallest = self._smallest_block(s, a)
            if smallest <= min_keep:
                raise ByonError(f"{name}.min_keep={min_keep} but a {what} block on the {self.grid[0]}×{self.grid[1]} "
                                f"token grid can hold only {smallest} tokens; set {name}.min_keep below {smallest} "
                                f"or enlarge {name}.{what}_scale")

    def _smallest_block(self, scale: Sequence[float], aspect: Sequence[float], n: int = 64) -> int:
        grid = [(scale[0] + (scale[1] - scale[0]) * i / n, aspect[0] + (aspect[1] - aspect[0]) * j / n)
                for i in range(n + 1) for j in range(n + 1)]
        return min(math.prod(block_size(self.grid, s, a)) for s, a in grid)

    def _draw_size(self, u: Tensor, scale: Sequence[float], aspect: Sequence[float]) -> tuple[int, int]:
        s = scale[0] + (scale[1] - scale[0]) * float(u[0])
        a = aspect[0] + (aspect[1] - aspect[0]) * float(u[1])
        return block_size(self.grid, s, a)

    def _blocks(self, size: tuple[int, int], shape: tuple[int, ...], g: Draw) -> Tensor:
        """Uniformly placed h×w blocks, one per entry of `shape` → bool (*shape, H·W)."""
        (H, W), (h, w) = self.grid, size
        dev = draw_device(g)
        top = randint(g, 0, H - h + 1, *shape, device=dev)
        left = randint(g, 0, W - w + 1, *shape, device=dev)
        rows, cols = torch.arange(H, device=dev), torch.arange(W, device=dev)
        in_rows = (rows >= top[..., None]) & (rows < top[..., None] + h)  # (*shape, H)
        in_cols = (cols >= left[..., None]) & (cols < left[..., None] + w)  # (*shape, W)
        return (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)

    def sample(self, batch_size: int, generator: Draw) -> MultiBlockMasks:
        """Masks for `batch_size` images, on the generator's device."""
        g, B, M, N = generator, batch_size, self.num_targets, self.grid[0] * self.grid[1]
        dev = draw_device(g)
        u = torch.rand(4, generator=shared(g), device=dev).cpu()  # the batch's block sizes
        t_size = self._draw_size(u[:2], self.target_scale, self.target_aspect)
        c_size = self._draw_size(u[2:], self.context_scale, self.context_aspect)

        # targets: (B, M, N) bool → (B, M, h·w) indices in raster order (every block is a full rectangle)
        target = self._blocks(t_size, (B, M), g)
        targets = target.nonzero()[:, 2].view(B, M, t_size[0] * t_size[1])

        # context candidates: level l excludes only the first M − l targets; `tries` fresh draws per level
        levels = 1 if self.allow_overlap else M + 1
        cand = self._blocks(c_size, (B, levels, self.tries), g)  # (B, L, R, N)
        if self.allow_overlap:
            allowed = torch.ones(B, 1, N, dtype=torch.bool, device=dev)
        else:
            union = torch.cat([torch.zeros_like(target[:, :1]), target.cumsum(1, dtype=torch.int32).bool()], 1)
            allowed = ~union.flip(1)  # level l: none of the first M − l targets → (B, M + 1, N)
        kept = cand & allowed[:, :, None]
        ok = (kept.sum(-1) > self.min_keep).flatten(1)  # (B, L·R), the last level always succeeds
        first = ok.to(torch.uint8).argmax(1)  # the first success in (level, try) order, as the official loop
        context = kept.flatten(1, 2)[torch.arange(B, device=dev), first]  # (B, N)
        relaxed = first // self.tries if not self.allow_overlap else torch.zeros_like(first)

        # equal keep counts: k = the batch minimum of each image's context tokens
        k = int(context.sum(1).min())
        if self.truncate == "random":  # a uniform k-subset of each context (keys > 1 sort non-context last)
            keys = rand(g, B, N, device=dev).masked_fill(~context, 2.0)
            ids = keys.argsort(1)[:, :k].sort(1).values
        else:  # the official rule: the first k context indices in raster order
            ids = torch.sort((~context).to(torch.uint8), dim=1, stable=True).indices[:, :k]
        return MultiBlockMasks(context=ids, targets=targets, relaxed=relaxed, context_mask=context)

    def __call__(self, samples: Sequence[Any], generator: Draw) -> tuple[Any, MultiBlockMasks]:
        return torch.utils.data.default_collate(samples), self.sample(len(samples), generator)


def gather_blocks(x: Tensor, ids: Tensor) -> Tensor:
    """x: (B, N, D), ids: (B, M, K) → (B, M, K, D)."""
    B = x.shape[0]
    return x[torch.arange(B, device=x.device).view(B, 1, 1), ids]


__all__ = ["TRUNCATIONS", "MultiBlockMaskCollator", "MultiBlockMasks", "block_size", "gather_blocks"]
