from __future__ import annotations

import torch

from byon.data import load_dataset
from byon.data.synthetic import make_synthetic


def test_deterministic_and_splits_differ():
    a = load_dataset("synthetic", "train")
    b = load_dataset("synthetic", "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    test = load_dataset("synthetic", "test")
    assert len(a) == 2000 and len(test) == 500
    assert not torch.equal(a.images[:500], test.images)
    x, _ = make_synthetic(20, seed=5)
    assert not torch.equal(x, make_synthetic(20, seed=6)[0])


def test_shapes_and_balance():
    gray = load_dataset("synthetic", "test")
    assert gray.images.shape == (500, 1, 28, 28) and gray.images.dtype == torch.uint8 and gray.num_classes == 10
    assert torch.bincount(gray.labels).tolist() == [50] * 10
    rgb = load_dataset("synthetic-rgb", "test")
    assert rgb.images.shape == (500, 3, 32, 32)
    # Colour: the channels are not copies of each other.
    assert (rgb.images[:, 0].float() - rgb.images[:, 1].float()).abs().mean() > 10
    assert load_dataset("synthetic", "test", image_size=20).images.shape[-1] == 20


def test_classes_are_distinguishable():
    """Translation-invariant |FFT| features + nearest class centroid already separate the classes."""
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")

    def feat(x):
        x = x.float()[:, 0] / 255
        f = torch.fft.rfft2(x - x.mean(dim=(1, 2), keepdim=True)).abs().flatten(1)
        return f / f.norm(dim=1, keepdim=True)

    ftr, fte = feat(train.images), feat(test.images)
    centroids = torch.stack([ftr[train.labels == k].mean(0) for k in range(10)])
    acc = ((fte @ centroids.T).argmax(1) == test.labels).float().mean()
    assert acc > 0.8
