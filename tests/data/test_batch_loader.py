from __future__ import annotations

import pytest
import torch

from byon.data import BatchLoader, ImageData
from byon.errors import ByonError


def toy(n: int = 24, labelled: bool = True) -> ImageData:
    """Image i is filled with the value i, so a batch tells which samples it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.arange(n) % 3 if labelled else None
    return ImageData(images, labels, ["a", "b", "c"] if labelled else [], "toy")


def ids(batches) -> list[list[int]]:
    return [x[:, 0, 0, 0].long().tolist() for x, _ in batches]


def test_batches_and_labels():
    loader = BatchLoader(toy(), batch_size=5, shuffle=False)
    out = list(loader)
    assert len(loader) == len(out) == 4
    x, y = out[0]
    assert x.shape == (5, 1, 2, 2) and x.dtype == torch.uint8 and y.tolist() == [0, 1, 2, 0, 1]
    assert ids(out)[0] == [0, 1, 2, 3, 4]
    assert len(BatchLoader(toy(), 5, shuffle=False, drop_last=False)) == 5
    assert list(BatchLoader(toy(labelled=False), 4))[0][1].tolist() == [-1] * 4


def test_permutation_depends_on_seed_and_epoch():
    a, b = BatchLoader(toy(), 4, seed=1), BatchLoader(toy(), 4, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    first = ids(a)
    assert first == ids(b)
    assert sorted(sum(first, [])) == list(range(24))
    assert first != list(map(list, zip(*[iter(range(24))] * 4)))  # shuffled
    assert a.epoch == 4 and ids(a) != first  # iterating to the end moved on to a new order
    c = BatchLoader(toy(), 4, seed=2)
    c.set_epoch(3)
    assert ids(c) != first


def test_rank_shards_disjoint_and_covering():
    shards = []
    for rank in range(3):
        loader = BatchLoader(toy(24), 2, seed=5, rank=rank, world_size=3)
        loader.set_epoch(1)
        shards.append(sum(ids(loader), []))
        assert len(loader) == 4
    assert all(len(s) == 8 for s in shards)
    assert sorted(sum(shards, [])) == list(range(24))
    # An uneven dataset: equal shards, still disjoint, the remainder left out this epoch.
    shards = [sum(ids(BatchLoader(toy(25), 1, rank=r, world_size=2)), []) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12 and not set(shards[0]) & set(shards[1])


def test_resume_yields_exactly_the_remaining_batches():
    full = ids(BatchLoader(toy(), 3, seed=9))
    loader = BatchLoader(toy(), 3, seed=9)
    it = iter(loader)
    seen = [next(it)[0][:, 0, 0, 0].long().tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    resumed = BatchLoader(toy(), 3, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # a framework re-announcing the same epoch keeps the position
    rest = ids(resumed)
    assert seen + rest == full and len(rest) == len(full) - 3
    assert resumed.state_dict() == {"epoch": 1, "batches": 0}


def test_batch_larger_than_shard():
    with pytest.raises(ByonError) as e:
        BatchLoader(toy(24), 16, world_size=2)
    assert "at most 12" in str(e.value) and "batch_size" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ByonError, match="rank"):
        BatchLoader(toy(), 4, rank=2, world_size=2)
