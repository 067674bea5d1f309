from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from byon.data import load_dataset
from byon.errors import ByonError


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10_train_and_test(tmp_path, cifar10_folder, use_parent):
    folder = tmp_path / "cifar-10-batches-py"
    rows = cifar10_folder(folder)
    root = tmp_path if use_parent else folder
    train = load_dataset("cifar10", "train", root=root)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(train.images[0].flatten(), torch.from_numpy(rows["data_batch_1"][0]))
    assert torch.equal(train.images[4].flatten(), torch.from_numpy(rows["data_batch_2"][0]))
    assert train.labels.tolist()[:5] == [0, 1, 2, 3, 1]
    assert train.classes[0] == "airplane" and train.num_classes == 10
    test = load_dataset("cifar10", "test", root=root)
    assert len(test) == 4 and test.labels.tolist() == [5, 6, 7, 8]


def test_cifar100_fine_labels(tmp_path, pickle_file):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 2)):
        data = np.full((n, 3072), 7, np.uint8)
        pickle_file(folder / name, {b"data": data, b"fine_labels": list(range(n)), b"coarse_labels": [0] * n})
    pickle_file(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [b"x"] * 20})
    train = load_dataset("cifar100", "train", root=tmp_path)
    assert train.images.shape == (6, 3, 32, 32) and train.labels.tolist() == list(range(6))
    assert train.num_classes == 100 and train.classes[5] == "c5"
    assert len(load_dataset("cifar100", "test", root=folder)) == 2


def test_missing_cifar_message(tmp_path):
    with pytest.raises(ByonError) as e:
        load_dataset("cifar10", "train", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "--data-root" in msg and "apt" in msg


def test_corrupt_and_incomplete_cifar(tmp_path, cifar10_folder):
    folder = tmp_path / "cifar-10-batches-py"
    cifar10_folder(folder)
    bad = folder / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ByonError) as e:
        load_dataset("cifar10", "train", root=tmp_path)
    assert str(bad) in str(e.value) and "truncated or corrupt" in str(e.value) and "\n" not in str(e.value)
    (folder / "test_batch").unlink()
    with pytest.raises(ByonError, match="incomplete.*test_batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_refuses_pickles_that_run_code(tmp_path, cifar10_folder):
    folder = tmp_path / "cifar-10-batches-py"
    cifar10_folder(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(os.system))
    with pytest.raises(ByonError, match="refusing to load"):
        load_dataset("cifar10", "test", root=tmp_path)
