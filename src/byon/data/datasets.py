"""`load_dataset`: one entry point for every dataset, with seeded subsets and optional resizing."""

from __future__ import annotations

from pathlib import Path

import torch

from byon.data.cifar import load_cifar
from byon.data.fashion_mnist import load_fashion_mnist
from byon.data.imagedata import ImageData, resize_images, subset_indices, take_subset
from byon.data.imagefolder import load_imagefolder
from byon.data.synthetic import load_synthetic
from byon.errors import ByonError, unknown

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic", "synthetic-rgb")
SPLITS = ("train", "val", "test")


def val_indices(data: ImageData, val_size: int, val_seed: int = 0) -> torch.Tensor:
    """Sorted (val_size,) indices of the training split held out as 'val': stratified by class, seeded by val_seed
    only (every run seed and method sees the same val images)."""
    if val_size >= len(data):
        raise ByonError(f"data.val_size={val_size} leaves no training images ({data.name} train has {len(data)}); "
                        f"hold out fewer (e.g. --set data.val_size={len(data) // 6})")
    return subset_indices(data.labels, len(data), val_size, val_seed)


def split_train_val(data: ImageData, split: str, val_size: int, val_seed: int = 0) -> ImageData:
    """The training split `data` without its held-out val images ('train'), or those images ('val')."""
    idx = val_indices(data, val_size, val_seed)
    if split == "val":
        return data.take(idx)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[idx] = False
    return data.take(keep.nonzero().flatten())


def load_dataset(name: str, split: str, root: str | Path | None = None, subset: int | None = None, seed: int = 0,
                 image_size: int | None = None, on_bad_file: str = "fail", val_size: int = 0,
                 val_seed: int = 0) -> ImageData:
    """A whole split in memory: uint8 (N, C, H, W) images (+ int64 labels unless unlabelled).

    root: where to look (fashion-mnist and cifar also search $BYON_DATA and system folders; imagefolder
    needs it); subset: keep exactly this many images, stratified by class and seeded by seed (taken after the
    val hold-out); image_size: resize to image_size × image_size; on_bad_file: imagefolder's 'fail' or 'skip'.
    val_size > 0 holds out that many training images (`val_indices`): split 'train' is the rest, split 'val'
    those images; 'val' needs val_size > 0. 'test' is unaffected.
    """
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if val_size < 0:
        raise ByonError(f"data.val_size must be 0 (no val split) or a positive number of images, got {val_size}")
    if split == "val" and val_size == 0:
        raise ByonError("the 'val' split is held out of the training split: give its size, e.g. "
                        "--set data.val_size=10000 (a run pretrained without one has no val split)")
    if image_size is not None and image_size < 1:
        raise ByonError(f"image_size must be a positive number of pixels, got {image_size}")
    source = "train" if split == "val" else split
    if name == "fashion-mnist":
        data = load_fashion_mnist(source, root)
    elif name in ("cifar10", "cifar100"):
        data = load_cifar(name, source, root)
    elif name == "imagefolder":
        data = load_imagefolder(root, source, image_size, on_bad_file)
    else:
        data = load_synthetic(name, source, image_size)
    if split in ("train", "val") and val_size:
        data = split_train_val(data, split, val_size, val_seed)
    if subset is not None:
        data = take_subset(data, subset, seed, split)
    if image_size is not None:
        data.images = resize_images(data.images, image_size)
    return data
