from __future__ import annotations

import pytest
import torch

from byon.data import ImageData, channel_stats, data_info, load_dataset
from byon.data.imagedata import subset_indices, take_subset
from byon.errors import ByonError


def imbalanced(labelled: bool = True) -> ImageData:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2).contiguous()
    return ImageData(images, labels if labelled else None, ["a", "b", "c"] if labelled else [], "toy")


@pytest.mark.parametrize(("n", "expected"), [(10, [5, 3, 2]), (7, [4, 2, 1]), (99, [49, 30, 20]), (100, [50, 30, 20])])
def test_stratified_exact_counts(n, expected):
    data = imbalanced()
    sub = take_subset(data, n, seed=1)
    counts = torch.bincount(sub.labels, minlength=3)
    assert counts.tolist() == expected and len(sub) == n
    assert ((counts.float() - n * torch.tensor([0.5, 0.3, 0.2])).abs() < 1).all()
    # Images travel with their labels (image value == original index).
    assert torch.equal(data.labels[sub.images[:, 0, 0, 0].long()], sub.labels)


def test_subset_seeded():
    labels = imbalanced().labels
    a, b = subset_indices(labels, 100, 10, seed=0), subset_indices(labels, 100, 10, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, subset_indices(labels, 100, 10, seed=1))
    u = subset_indices(None, 100, 30, seed=0)
    assert len(u.unique()) == 30 and not torch.equal(u, torch.arange(30))
    sub = take_subset(imbalanced(labelled=False), 30, seed=0)
    assert sub.labels is None and len(sub) == 30


def test_subset_through_load_dataset_and_errors():
    sub = load_dataset("synthetic", "train", subset=100, seed=3)
    assert torch.bincount(sub.labels).tolist() == [10] * 10
    with pytest.raises(ByonError, match="empty subset"):
        load_dataset("synthetic", "test", subset=0)
    with pytest.raises(ByonError, match="maximum is 500"):
        load_dataset("synthetic", "test", subset=501)


def test_unknown_dataset_and_split():
    with pytest.raises(ByonError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10", "train")
    with pytest.raises(ByonError, match="unknown split"):
        load_dataset("synthetic", "validation")


def test_channel_stats_and_data_info():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 5, 7), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x, chunk_elems=300)  # several chunks
    ref = x.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), ref.mean(1), atol=1e-12)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), ref.std(1, correction=0), atol=1e-12)
    info = data_info(load_dataset("synthetic-rgb", "test", subset=20), mean, std)
    assert (info.img_size, info.in_chans, info.num_classes, info.mean) == (32, 3, 10, mean)
