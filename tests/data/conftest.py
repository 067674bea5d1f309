"""Shared helpers for the data tests: tiny files written into tmp_path, never real datasets."""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # These tensors are tiny; on a shared 2-core box a second intra-op thread only adds scheduling waits.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def no_byon_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYON_DATA", raising=False)


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    """An idx file of uint8 `array` (gzipped when path ends in .gz)."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_fmnist(folder: Path, split: str, n: int, gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random 28×28 images and labels in 0..9 as the split's two idx files; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, 2051)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, 2049)
    return images, labels


def write_pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(folder: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """A fake cifar-10-batches-py folder; returns the data rows of every batch file by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        write_pickle(folder / name, {b"data": data, b"labels": labels, b"batch_label": name.encode()})
        rows[name] = data
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return rows


@pytest.fixture
def idx_file():
    return write_idx


@pytest.fixture
def fmnist_files():
    return write_fmnist


@pytest.fixture
def cifar10_folder():
    return write_cifar10


@pytest.fixture
def pickle_file():
    return write_pickle
