from __future__ import annotations

import pytest
import torch

from byon.errors import ByonError
from byon.eval.baselines import pca_features, pixel_features, pixel_mean


def test_pixel_features_raw_and_centered() -> None:
    images = torch.tensor([[[[0, 255], [51, 102]]], [[[255, 255], [0, 0]]]], dtype=torch.uint8)
    mu = pixel_mean(images)
    torch.testing.assert_close(mu, torch.tensor([0.5, 1.0, 0.1, 0.2]))
    out = pixel_features(images, mu)
    torch.testing.assert_close(out["raw"][0], torch.tensor([0.0, 1.0, 0.2, 0.4]))
    torch.testing.assert_close(out["centered"].mean(0), torch.zeros(4))
    assert "centered" not in pixel_features(images)
    with pytest.raises(ByonError):
        pixel_features(images, mu[:3])


def test_pca_shapes_and_top_component() -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0]), dim=0)
    # variance 25 along `direction`, 0.01 elsewhere, plus an offset PCA must remove
    train = 5 * torch.randn(400, 1, generator=g) * direction + 0.1 * torch.randn(400, 5, generator=g) + 3.0
    test = torch.randn(7, 5, generator=g)
    ptr, pte = pca_features(train, test, dim=2)
    assert ptr.shape == (400, 2) and pte.shape == (7, 2)
    torch.testing.assert_close(ptr.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    var = ptr.var(0)
    assert var[0] > 20 and var[1] < 0.05  # ordered by variance, the first takes the dominant direction
    # projecting the direction itself gives ±|direction| on the first axis, ~0 on the second
    _, proj = pca_features(train, train.mean(0, keepdim=True) + direction, dim=2)
    assert abs(abs(float(proj[0, 0])) - 1.0) < 1e-2 and abs(float(proj[0, 1])) < 1e-2


def test_pca_rejects_bad_dim() -> None:
    x = torch.randn(10, 4)
    with pytest.raises(ByonError):
        pca_features(x, x, dim=5)
    with pytest.raises(ByonError):
        pca_features(x, x[:, :3], dim=2)
