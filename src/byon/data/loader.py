"""`BatchLoader`: batches sliced out of in-memory tensors; seeded per-epoch shuffles, rank shards, resumable
(`EpochOrder`, shared with the streaming loader)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from byon.data.imagedata import ImageData
from byon.errors import ByonError


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """(n,) int64 permutation that depends only on (seed, epoch)."""
    g = torch.Generator()
    # Large odd multipliers keep (seed, epoch) pairs from colliding.
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + 4_242) % (2**63 - 1))
    return torch.randperm(n, generator=g)


class EpochOrder:
    """The order, rank shards and position shared by the in-memory `BatchLoader` and the streaming loader
    (`byon.data.stream.StreamLoader`), so both deal the same samples to the same ranks in the same batches.

    Each epoch's order is a permutation depending only on (seed, epoch) (identity without shuffle);
    its first ⌊N / world_size⌋·world_size entries are dealt round-robin, so the ranks get disjoint,
    equal-length shards. Iterating to the end moves on to the next epoch; `set_epoch(e)` jumps to e.
    `state_dict()` holds (epoch, batches yielded this epoch); after `load_state_dict` the next
    iteration yields exactly the batches not yet yielded.
    """

    def __init__(self, n: int, name: str, batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ByonError(f"BatchLoader needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size < 1:
            raise ByonError(f"batch size must be positive, got {batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shard_size = n // world_size
        if batch_size > self.shard_size:
            per = f"each of the {world_size} ranks sees" if world_size > 1 else "the dataset has"
            raise ByonError(f"batch size {batch_size} is larger than the {self.shard_size} images {per} "
                            f"({name}, {n} images); use a batch size of at most {self.shard_size} "
                            f"(e.g. --set train.batch_size={_pow2_at_most(self.shard_size)})")
        self.epoch = 0
        self.consumed = 0  # batches of `epoch` already yielded

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        full, rest = divmod(self.shard_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Switch to epoch; a different epoch starts from its first batch (the same one keeps its position)."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def indices(self, epoch: int) -> Tensor:
        """(shard_size,) int64: this rank's sample indices for epoch, in order."""
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else torch.arange(self.n)
        return order[self.rank : self.shard_size * self.world_size : self.world_size]

    def batch_indices(self, epoch: int, start: int) -> Iterator[Tensor]:
        """This rank's batches of epoch from batch `start` on, as (≤ batch_size,) int64 sample indices."""
        idx = self.indices(epoch)
        for b in range(start, len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if not 0 <= batches <= len(self):
            raise ByonError(f"loader state says {batches} batches were yielded, but an epoch has only {len(self)} "
                            f"(was the batch size, dataset or device count changed since the checkpoint?)")
        self.epoch, self.consumed = epoch, batches


class BatchLoader(EpochOrder):
    """Iterates `(images uint8 (B, C, H, W), labels int64 (B,))` (labels −1 when unlabelled), sliced out of the
    in-memory `data`, in `EpochOrder`'s seeded, rank-sharded, resumable order."""

    def __init__(self, data: ImageData, batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(len(data), data.name, batch_size, shuffle, drop_last, seed, rank, world_size)
        self.data = data
        labels = data.labels if data.labels is not None else torch.full((len(data),), -1, dtype=torch.int64)
        self.labels = labels.to(data.images.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # The position is read on the first next(), so iter() alone (e.g. a framework's probe) changes nothing.
        device = self.data.images.device
        for b, sel in enumerate(self.batch_indices(self.epoch, self.consumed), start=self.consumed):
            sel = sel.to(device)
            self.consumed = b + 1
            yield self.data.images.index_select(0, sel), self.labels.index_select(0, sel)
        self.epoch, self.consumed = self.epoch + 1, 0


def _pow2_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)
