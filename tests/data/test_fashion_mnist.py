from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from byon.data import fashion_mnist as fm
from byon.data import load_dataset
from byon.data.fashion_mnist import read_idx
from byon.errors import ByonError


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", [tmp_path / "no-system-copy"])


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_raw_idx(tmp_path, fmnist_files, gz):
    images, labels = fmnist_files(tmp_path, "train", 7, gz=gz)
    data = load_dataset("fashion-mnist", "train", root=tmp_path)
    assert data.images.shape == (7, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
    assert data.classes[0] == "T-shirt/top" and data.num_classes == 10 and data.name == "fashion-mnist"


def test_finds_subfolder_and_env(tmp_path, fmnist_files, monkeypatch):
    _, labels = fmnist_files(tmp_path / "fashion-mnist", "test", 3)
    assert load_dataset("fashion-mnist", "test", root=tmp_path).labels.tolist() == labels.tolist()
    monkeypatch.setenv("BYON_DATA", str(tmp_path))
    assert len(load_dataset("fashion-mnist", "test")) == 3


def test_missing_dataset_message(tmp_path):
    with pytest.raises(ByonError) as e:
        load_dataset("fashion-mnist", "train", root=tmp_path / "empty")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "empty") in msg and "no-system-copy" not in msg  # an explicit root is searched alone
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "https://github.com/zalandoresearch/fashion-mnist" in msg and "--data-root" in msg
    with pytest.raises(ByonError, match="no-system-copy"):  # without one, the system folders are searched
        load_dataset("fashion-mnist", "train")


def test_an_explicit_root_is_used_alone_and_the_folder_read_is_recorded(tmp_path, fmnist_files, monkeypatch):
    fmnist_files(tmp_path / "env", "train", 5)
    fmnist_files(tmp_path / "env", "test", 3)
    fmnist_files(tmp_path / "mine", "train", 4)  # the user's copy has no test split
    monkeypatch.setenv("BYON_DATA", str(tmp_path / "env"))
    assert load_dataset("fashion-mnist", "train", root=tmp_path / "mine").source == str(tmp_path / "mine")
    for root in (tmp_path / "mine", tmp_path / "typo"):  # never paired with another copy's split
        with pytest.raises(ByonError, match=f"test split not found .* in {root}, {root}/fashion-mnist"):
            load_dataset("fashion-mnist", "test", root=root)
    data = load_dataset("fashion-mnist", "test", subset=2)  # no root: $BYON_DATA, recorded through a subset
    assert len(data) == 2 and data.source == str(tmp_path / "env")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_message(tmp_path, fmnist_files, gz):
    fmnist_files(tmp_path, "train", 4, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ByonError) as e:
        load_dataset("fashion-mnist", "train", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "truncated or corrupt" in msg and "re-download" in msg


def test_bad_magic_and_count_mismatch(tmp_path, idx_file):
    p = idx_file(tmp_path / "x.gz", np.arange(5, dtype=np.uint8), 2049)
    with pytest.raises(ByonError, match="magic number 2049, expected 2051"):
        read_idx(p, 2051)
    assert read_idx(p).tolist() == [0, 1, 2, 3, 4]
    idx_file(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), 2051)
    idx_file(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8), 2049)
    with pytest.raises(ByonError, match="3 images but 2 labels"):
        load_dataset("fashion-mnist", "train", root=tmp_path)


def test_damaged_gzip_is_reported(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 40)[:-8] + b"garbage!")
    with pytest.raises(ByonError, match="truncated or corrupt"):
        read_idx(p)
