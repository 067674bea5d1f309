"""`load_dataset`: one entry point for every dataset, with seeded subsets and optional resizing."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from byon.data.cifar import load_cifar
from byon.data.fashion_mnist import load_fashion_mnist
from byon.data.imagedata import ImageData, resize_images, subset_indices, take_subset
from byon.data.imagefolder import load_imagefolder
from byon.data.shards import open_shards
from byon.data.stream import DEFAULT_SIZE, StreamData, open_imagefolder
from byon.data.synthetic import load_synthetic
from byon.errors import ByonError, unknown

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "shards", "synthetic", "synthetic-rgb")
STREAMABLE = ("imagefolder", "shards")
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
    elif name == "shards":  # decoded whole (centre crop): the small splits evaluation reads
        shards = open_shards(root, source, image_size or DEFAULT_SIZE)
        data = shards.sample(len(shards), on_bad_file)
    else:
        data = load_synthetic(name, source, image_size)
    if split in ("train", "val") and val_size:
        data = split_train_val(data, split, val_size, val_seed)
    if subset is not None:
        data = take_subset(data, subset, seed, split)
    if image_size is not None:
        data.images = resize_images(data.images, image_size)
    return data


def memory_budget(gb: float | None) -> float:
    """Bytes `data.storage=auto` may hold in memory: gb, or a quarter of the machine's RAM."""
    if gb is not None:
        return gb * 1e9
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4


def plan_storage(name: str, storage: str, listed: StreamData | None, image_size: int | None,
                 budget_gb: float | None, num_workers: int) -> tuple[str, str]:
    """→ ("memory" | "stream", the line a run starts with saying which and why). `listed`: the training split of
    an image folder or shards as `open_split` lists it (None for the other datasets). `auto` holds an image folder
    in memory when its decoded size (N · 3 · S², S = image_size or the first image's size) fits the budget
    (`memory_budget`); shards always stream; the other datasets are always in memory. Only the listing is read
    (and one image's header)."""
    if listed is None:
        if storage == "stream":
            raise ByonError(f"data.storage=stream streams image folders and shards; {name} is small and always held "
                            f"in memory: drop data.storage")
        return "memory", f"data: {name} held in memory"
    stream_line = (f"streamed at {listed.img_size} px, decoded and random-resized-cropped in {num_workers} worker "
                   f"process(es) per device (data.num_workers)")
    if name == "shards":
        if storage == "memory":
            raise ByonError("data.storage=memory: shards always stream; use storage auto or stream")
        return "stream", f"data: shards '{listed.source}' {stream_line}: {len(listed)} images"
    w = h = image_size or listed.img_size
    if image_size is None:
        try:
            with Image.open(listed.reader.name(0)) as im:
                w, h = im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass
    need, budget = len(listed) * 3 * w * h, memory_budget(budget_gb)
    fits = need <= budget
    mode = storage if storage != "auto" else "memory" if fits else "stream"
    why = (f"{len(listed)} images, ~{need / 1e9:.3g} GB decoded at {w}x{h} px "
           f"{'≤' if fits else '>'} the {budget / 1e9:.3g} GB budget (data.memory_budget_gb)")
    how = "held in memory" if mode == "memory" else stream_line
    return mode, f"data: imagefolder '{listed.source}' {how}; data.storage={storage}: {why}"


def open_split(name: str, split: str, root: str | Path | None, img_size: int) -> StreamData:
    """A split ('train' or 'test') of an image folder or shards, listed (never decoded whole)."""
    if name not in STREAMABLE:
        raise ByonError(f"only image folders and shards stream, not {name}")
    return open_shards(root, split, img_size) if name == "shards" else open_imagefolder(root, split, img_size)


def narrow(data: StreamData, split: str, subset: int | None = None, seed: int = 0, val_size: int = 0,
           val_seed: int = 0) -> StreamData:
    """`load_dataset`'s val hold-out ('train' without it, or 'val') and subset of a listed training split."""
    if split in ("train", "val") and val_size:
        data = split_train_val(data, split, val_size, val_seed)
    if subset is not None:
        data = take_subset(data, subset, seed, split)
    return data


def open_dataset(name: str, split: str, root: str | Path | None, img_size: int, subset: int | None = None,
                 seed: int = 0, val_size: int = 0, val_seed: int = 0) -> StreamData:
    """`load_dataset`'s split of an image folder or shards, streamed: listed, the val hold-out and subset taken
    from the listing, never decoded whole."""
    data = open_split(name, "train" if split == "val" else split, root, img_size)
    return narrow(data, split, subset, seed, val_size, val_seed)
