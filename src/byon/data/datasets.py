"""`load_dataset`: one entry point for every dataset, with seeded subsets and optional resizing."""

from __future__ import annotations

from pathlib import Path

from byon.data.cifar import load_cifar
from byon.data.fashion_mnist import load_fashion_mnist
from byon.data.imagedata import ImageData, resize_images, take_subset
from byon.data.imagefolder import load_imagefolder
from byon.data.synthetic import load_synthetic
from byon.errors import ByonError, unknown

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic", "synthetic-rgb")
SPLITS = ("train", "test")


def load_dataset(name: str, split: str, root: str | Path | None = None, subset: int | None = None, seed: int = 0,
                 image_size: int | None = None, on_bad_file: str = "fail") -> ImageData:
    """A whole split in memory: uint8 (N, C, H, W) images (+ int64 labels unless unlabelled).

    root: where to look (fashion-mnist and cifar also search $BYON_DATA and system folders; imagefolder
    needs it); subset: keep exactly this many images, stratified by class and seeded by seed;
    image_size: resize to image_size × image_size; on_bad_file: imagefolder's 'fail' or 'skip'.
    """
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if image_size is not None and image_size < 1:
        raise ByonError(f"image_size must be a positive number of pixels, got {image_size}")
    if name == "fashion-mnist":
        data = load_fashion_mnist(split, root)
    elif name in ("cifar10", "cifar100"):
        data = load_cifar(name, split, root)
    elif name == "imagefolder":
        data = load_imagefolder(root, split, image_size, on_bad_file)
    else:
        data = load_synthetic(name, split, image_size)
    if subset is not None:
        data = take_subset(data, subset, seed, split)
    if image_size is not None:
        data.images = resize_images(data.images, image_size)
    return data
