from __future__ import annotations

import pytest
import torch

from byon.errors import ByonError
from byon.eval.knn import knn_classify


def _angle(deg: float) -> list[float]:
    rad = torch.deg2rad(torch.tensor(deg))
    return [float(torch.cos(rad)), float(torch.sin(rad))]


def test_weighted_vote_beats_majority() -> None:
    # query at 0°: one class-0 neighbour at 0° (sim 1), two class-1 neighbours at ±60° (sim 0.5).
    # Majority says 1; with T = 0.07 the weight ratio is exp(0.5 / 0.07) ≈ 1265 ≫ 2, so 0 wins.
    train = torch.tensor([_angle(0), _angle(60), _angle(-60)])
    train_y = torch.tensor([0, 1, 1])
    test = torch.tensor([_angle(0)])
    weighted = knn_classify(train, train_y, test, torch.tensor([0]), k=3, temperature=0.07)
    assert weighted["top1"] == 100.0
    # at a high temperature the votes become near-uniform and the majority (class 1) wins
    uniform = knn_classify(train, train_y, test, torch.tensor([1]), k=3, temperature=100.0)
    assert uniform["top1"] == 100.0
    assert "top5" not in weighted and weighted["k"] == 3


def test_cosine_ignores_feature_scale() -> None:
    train = torch.tensor([[1.0, 0.0], [10.0, 10.0]])
    # nearest to class 1 by Euclidean distance (90 vs 101) and by dot product (1200 vs 100),
    # nearest to class 0 by angle (cos 0.98 vs 0.83)
    test = torch.tensor([[100.0, 20.0]])
    assert knn_classify(train, torch.tensor([0, 1]), test, torch.tensor([0]), k=1)["top1"] == 100.0


def _clusters(n_per: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 10
    y = torch.arange(classes).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_separated_clusters_are_perfect() -> None:
    train_f, train_y = _clusters(30, 6, 8, 0.5, seed=0)
    test_f, test_y = _clusters(10, 6, 8, 0.5, seed=1)
    r = knn_classify(train_f, train_y, test_f, test_y, k=5)
    assert r["top1"] == 100.0 and r["top5"] == 100.0
    # wrong labels on the test side must show up as errors
    assert knn_classify(train_f, train_y, test_f, (test_y + 1) % 6, k=5)["top1"] == 0.0


def test_chunking_does_not_change_result() -> None:
    train_f, train_y = _clusters(40, 5, 6, 6.0, seed=2)  # heavy overlap: mistakes happen
    test_f, test_y = _clusters(23, 5, 6, 6.0, seed=3)
    whole = knn_classify(train_f, train_y, test_f, test_y, k=7, chunk=10_000)
    assert 20.0 < whole["top1"] < 100.0
    for chunk in (1, 7, 64):
        assert knn_classify(train_f, train_y, test_f, test_y, k=7, chunk=chunk) == whole


def test_small_temperature_stays_finite() -> None:
    # exp(sim / T) is inf for every neighbour at T = 1e-3; the nearest (class 1) must still win
    train = torch.tensor([_angle(0), _angle(8), _angle(-8)])
    r = knn_classify(train, torch.tensor([1, 0, 0]), torch.tensor([_angle(0)]), torch.tensor([1]), k=3,
                     temperature=1e-3)
    assert r["top1"] == 100.0


def test_k_is_capped_and_inputs_checked() -> None:
    f, y = _clusters(2, 2, 3, 0.1, seed=5)
    assert knn_classify(f, y, f, y, k=50)["k"] == 4
    with pytest.raises(ByonError):
        knn_classify(f, y, f[:, :2], y)
    with pytest.raises(ByonError):
        knn_classify(f, y[:-1], f, y)
    with pytest.raises(ByonError):
        knn_classify(f, y, f, y, num_classes=1)
