from __future__ import annotations

import pytest
import torch

from byon.errors import ByonError
from byon.eval.linear import linear_probe


def _separable(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from a fixed random linear map (argmax of W x) with a margin; features scaled by 1e3
    and shifted, which the BatchNorm in the head must absorb."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, classes, generator=g)
    g.manual_seed(seed)
    x = torch.randn(4 * n, dim, generator=g)
    top2 = (x @ w).topk(2, dim=1).values
    x = x[(top2[:, 0] - top2[:, 1]) > 1.0][:n]
    return x * 1e3 + 50.0, (x @ w).argmax(1)


def test_linearly_separable_reaches_high_accuracy() -> None:
    train_f, train_y = _separable(600, 8, 5, seed=1)
    test_f, test_y = _separable(300, 8, 5, seed=2)
    r = linear_probe(train_f, train_y, test_f, test_y, epochs=30, batch_size=64)
    assert r["top1"] >= 97.0
    assert r["top5"] == 100.0
    assert r["train_loss"] < 0.3
    assert r["lr"] == pytest.approx(0.1 * 64 / 256)


def test_random_labels_stay_near_chance() -> None:
    train_f, _ = _separable(600, 8, 5, seed=1)
    test_f, test_y = _separable(300, 8, 5, seed=2)
    noise = torch.randint(0, 5, (600,), generator=torch.Generator().manual_seed(3))
    assert linear_probe(train_f, noise, test_f, test_y, epochs=5, batch_size=64)["top1"] < 45.0


def test_deterministic_for_a_seed() -> None:
    train_f, train_y = _separable(300, 6, 4, seed=3)
    test_f, test_y = _separable(100, 6, 4, seed=4)
    kw = dict(epochs=3, batch_size=50)
    a = linear_probe(train_f, train_y, test_f, test_y, seed=7, **kw)
    b = linear_probe(train_f, train_y, test_f, test_y, seed=7, **kw)
    c = linear_probe(train_f, train_y, test_f, test_y, seed=8, **kw)
    assert a == b
    assert a["train_loss"] != c["train_loss"]


def test_restores_thread_count_and_checks_inputs() -> None:
    train_f, train_y = _separable(50, 4, 3, seed=5)
    threads = torch.get_num_threads()
    linear_probe(train_f, train_y, train_f, train_y, epochs=1, batch_size=49)  # last batch of 1 is dropped
    assert torch.get_num_threads() == threads
    with pytest.raises(ByonError, match="did you mean"):
        linear_probe(train_f, train_y, train_f, train_y, optimizer="sgdd")
    with pytest.raises(ByonError):
        linear_probe(train_f[:1], train_y[:1], train_f, train_y)
