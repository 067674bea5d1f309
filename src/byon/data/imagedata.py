"""`ImageData`: a whole split held in memory as uint8 tensors, plus subsetting, resizing and stats."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from byon.errors import ByonError


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to know about its data."""

    name: str
    img_size: int
    in_chans: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class ImageData:
    """images: uint8 (N, C, H, W); labels: int64 (N,) or None when unlabelled; classes: label names
    (empty when unlabelled); name: the dataset's name; source: the folder the split was read from (None for
    generated data)."""

    images: Tensor
    labels: Tensor | None
    classes: list[str]
    name: str
    source: str | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        labels = self.labels
        if labels is not None and (labels.dtype != torch.int64 or labels.shape != (len(self.images),)):
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {labels.dtype} "
                             f"{tuple(labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def img_size(self) -> int:
        """Side of the (square) images."""
        h, w = self.images.shape[-2:]
        if h != w:
            raise ByonError(f"the {self.name} images are {h}x{w}, not square; resize them with "
                            f"image_size=N (e.g. --set data.image_size={min(h, w)})")
        return h

    def take(self, idx: Tensor) -> ImageData:
        """The images at indices idx: (M,) int64."""
        labels = None if self.labels is None else self.labels.index_select(0, idx)
        return ImageData(self.images.index_select(0, idx), labels, list(self.classes), self.name, self.source)


def subset_indices(labels: Tensor | None, n_total: int, n: int, seed: int = 0) -> Tensor:
    """Sorted (n,) int64 indices: stratified when labels (N,) are given — each class gets its share of n
    (largest remainders take the leftover slots) so the total is exactly n — else plain random."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(n_total, generator=g)[:n].sort().values
    num = int(labels.max()) + 1 if len(labels) else 0
    counts = torch.bincount(labels, minlength=num)
    # Integer arithmetic keeps the quotas exact: quota_k = floor(n·c_k / N) (+1 for the largest remainders).
    quota = counts * n // n_total
    rem = counts * n % n_total
    leftover = n - int(quota.sum())
    quota[torch.argsort(-rem, stable=True)[:leftover]] += 1
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    picks = []
    for k in range(num):
        if quota[k] == 0:
            continue
        members = order[starts[k] : starts[k] + counts[k]]
        picks.append(members[torch.randperm(int(counts[k]), generator=g)[: int(quota[k])]])
    return torch.cat(picks).sort().values


def take_subset(data: ImageData, n: int, seed: int = 0, split: str = "train") -> ImageData:
    """A seeded subset of exactly n images (stratified by class when labelled)."""
    if n <= 0:
        raise ByonError(f"empty subset (subset={n}); give a positive number of images, or no subset to use "
                        f"all {len(data)} {data.name} {split} images")
    if n > len(data):
        raise ByonError(f"subset={n} is larger than the {data.name} {split} split; the maximum is "
                        f"{len(data)} (or no subset for all of it)")
    return data.take(subset_indices(data.labels, len(data), n, seed))


def resize_images(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Bilinear (antialiased) resize of uint8 (N, C, H, W) to uint8 (N, C, size, size)."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: Tensor, chunk_elems: int = 1 << 22) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in [0, 1] units of uint8 (N, C, H, W), in float64 chunks."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ByonError(f"channel_stats needs a non-empty (N, C, H, W) batch, got {tuple(images.shape)}")
    n, c = images.shape[:2]
    per_image = images[0].numel()
    step = max(1, chunk_elems // per_image)
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, step):
        x = images[i : i + step].to(torch.float64)
        s += x.sum(dim=(0, 2, 3))
        s2 += x.square().sum(dim=(0, 2, 3))
    count = n * per_image // c
    mean = s / count
    var = (s2 / count - mean.square()).clamp_min(0.0)
    return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())
