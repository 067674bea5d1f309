"""Streaming image data: a split known by its files, decoded batch by batch in DataLoader worker processes.

`StreamData` lists an image folder (or tar shards, `byon.data.shards`) without opening an image. `StreamLoader`
deals the same (seed, epoch) order and rank shards as the in-memory `BatchLoader` (`EpochOrder`); each batch is
decoded in a worker process, and the random-resized-crop is taken at decode time from the full-resolution image
(as MAE's loader does) at the run's image size; the rest of the augmentation stays batched on the device. Every
draw of sample i in epoch e comes from a generator seeded by (seed, e, i), so the batches do not depend on the
number of workers or processes, and a resumed run decodes the same crops again.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from byon.data.imagedata import ImageData
from byon.data.imagefolder import list_imagefolder
from byon.data.loader import EpochOrder
from byon.errors import ByonError

log = logging.getLogger(__name__)

STATS_IMAGES = 256  # images decoded (centre crop) for the channel statistics of a streamed split
DEFAULT_SIZE = 224  # a streamed split's image size when neither data.image_size nor model.img_size is set
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)
SKIP_HINT = "--set data.on_bad_file=skip"
_MASK = (1 << 64) - 1


class Reader(Protocol):
    """Random access to the encoded bytes of a split's images."""

    def __len__(self) -> int: ...
    def read(self, i: int) -> bytes: ...
    def name(self, i: int) -> str: ...
    def take(self, idx: Tensor) -> Reader: ...


class FolderReader:
    """One file per image. Paths are kept as one fixed-width byte array relative to the folder (no Python object
    per image), so the index costs ~the path length per image and forked workers share it untouched."""

    def __init__(self, folder: Path, paths: np.ndarray) -> None:
        self.folder, self.paths = folder, paths

    @classmethod
    def of(cls, folder: Path, files: Sequence[Path]) -> FolderReader:
        return cls(folder, np.array([str(f.relative_to(folder)).encode() for f in files], dtype=bytes))

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return str(self.folder / self.paths[i].decode())

    def read(self, i: int) -> bytes:
        with open(self.name(i), "rb") as f:
            return f.read()

    def take(self, idx: Tensor) -> FolderReader:
        return FolderReader(self.folder, self.paths[idx.numpy()])


@dataclass
class StreamData:
    """A split known by its files: `reader` gives each image's bytes; labels int64 (N,) or None when unlabelled;
    images are decoded to 3 channels at img_size × img_size."""

    reader: Reader
    labels: Tensor | None
    classes: list[str]
    name: str
    source: str | None
    img_size: int
    in_chans: int = 3

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, idx: Tensor) -> StreamData:
        """The images at indices idx: (M,) int64 (no image is read)."""
        labels = None if self.labels is None else self.labels.index_select(0, idx)
        return replace(self, reader=self.reader.take(idx), labels=labels)

    def sample(self, n: int = STATS_IMAGES, on_bad_file: str = "fail") -> ImageData:
        """Up to n evenly spaced images decoded with a centre crop: the channel statistics and data-fitted buffers
        (l-DAE's PCA basis) of a split too large to decode whole."""
        idx = torch.linspace(0, len(self) - 1, min(n, len(self))).round().long().unique()
        arrays, keep, bad = [], [], []
        for i in idx.tolist():
            try:
                arrays.append(decode(self.reader.read(i), self.img_size))
                keep.append(i)
            except UNREADABLE as e:
                bad.append((self.reader.name(i), _reason(e)))
        report_bad(bad, on_bad_file)
        if not arrays:
            raise ByonError(f"none of the {len(idx)} images sampled from '{self.source}' is readable")
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        labels = None if self.labels is None else self.labels[torch.tensor(keep)]
        return ImageData(images, labels, list(self.classes), self.name, self.source)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed that depends only on (seed, epoch, sample index) (splitmix64 of their mix)."""
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + (index + 1) * 0x94D049BB133111EB) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def crop_box(w: int, h: int, u: Sequence[float], scale: Sequence[float],
             ratio: Sequence[float]) -> tuple[float, float, float, float]:
    """(left, top, width, height) of a random-resized-crop of a w × h image from four uniforms u: area fraction
    ~ U(scale), aspect w/h log-uniform in ratio, sides clamped to the image, position uniform — the draw of the
    batched `transforms.random_resized_crop`."""
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * w * h
    aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    cw, ch = min(math.sqrt(area * aspect), w), min(math.sqrt(area / aspect), h)
    return (w - cw) * u[2], (h - ch) * u[3], cw, ch


def decode(blob: bytes, size: int, scale: Sequence[float] | None = None, ratio: Sequence[float] = (3 / 4, 4 / 3),
           seed: int = 0) -> np.ndarray:
    """Encoded image → uint8 (size, size, 3). With `scale`: a random-resized-crop drawn from `seed`; without: the
    centred square. JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the crop at least
    `size` pixels across, then resampled bilinearly with antialiasing from the sub-pixel crop box."""
    with Image.open(io.BytesIO(blob)) as im:
        w, h = im.size
        if scale is None:
            side = min(w, h)
            x0, y0, cw, ch = (w - side) / 2, (h - side) / 2, side, side
        else:
            rng = random.Random(seed)
            x0, y0, cw, ch = crop_box(w, h, [rng.random() for _ in range(4)], scale, ratio)
        if im.format == "JPEG":
            im.draft("RGB", (math.ceil(w * size / cw), math.ceil(h * size / ch)))
        sx, sy = im.size[0] / w, im.size[1] / h
        rgb = im.convert("RGB")
        out = rgb.resize((size, size), Image.Resampling.BILINEAR,
                         box=(x0 * sx, y0 * sy, (x0 + cw) * sx, (y0 + ch) * sy))
    return np.asarray(out, dtype=np.uint8)


def _reason(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def report_bad(bad: list[tuple[str, str]], on_bad_file: str, skipped_before: int = 0) -> None:
    """`data.on_bad_file` for images found unreadable while streaming: 'fail' raises on the first, 'skip' logs."""
    if not bad:
        return
    if on_bad_file == "fail":
        path, reason = bad[0]
        raise ByonError(f"cannot read image '{path}' ({reason}); remove or replace it, or skip unreadable files "
                        f"with {SKIP_HINT}")
    log.warning("skipped %d unreadable image file(s) (%d in all; first: '%s': %s)", len(bad),
                skipped_before + len(bad), bad[0][0], bad[0][1])


class DecodeBatches(torch.utils.data.Dataset):
    """Runs in the DataLoader workers: key (epoch, sample indices) → (uint8 (B', C, S, S), int64 (B',) labels (−1
    when unlabelled), [(name, reason)] of the unreadable images left out, B' = B − their count)."""

    def __init__(self, data: StreamData, seed: int, crop_scale: Sequence[float] | None,
                 crop_ratio: Sequence[float]) -> None:
        self.reader, self.size, self.seed = data.reader, data.img_size, seed
        self.scale, self.ratio = crop_scale, crop_ratio
        self.labels = data.labels if data.labels is not None else torch.full((len(data),), -1, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key: tuple[int, list[int]]) -> tuple[Tensor, Tensor, list[tuple[str, str]]]:
        epoch, idx = key
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        keep, bad = [], []
        for i in idx:
            try:
                out[len(keep)] = decode(self.reader.read(i), self.size, self.scale, self.ratio,
                                        sample_seed(self.seed, epoch, i))
            except UNREADABLE as e:
                bad.append((self.reader.name(i), _reason(e)))
                continue
            keep.append(i)
        images = torch.from_numpy(out[: len(keep)]).permute(0, 3, 1, 2).contiguous()
        return images, self.labels[torch.tensor(keep, dtype=torch.int64)], bad


class _Keys(torch.utils.data.Sampler):
    """The loader's remaining batches, read when a DataLoader iterator starts: (epoch, this rank's indices)."""

    def __init__(self, loader: StreamLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.loader.epoch
        for sel in self.loader.batch_indices(epoch, self.loader.consumed):
            yield epoch, sel.tolist()

    def __len__(self) -> int:
        return len(self.loader) - self.loader.consumed


def _as_is(x: Any) -> Any:
    return x


class StreamLoader(EpochOrder):
    """Iterates `(images uint8 (B, 3, S, S), labels int64 (B,))` like `BatchLoader` (same order, rank shards,
    `state_dict`), decoding each batch in one of `num_workers` worker processes (0: in this one), started for
    each pass over the data. The
    images are already random-resized-cropped (`decode_crop`): the engine's batched augmentation skips its crop.
    An unreadable image is an error (on_bad_file 'fail') or left out of its batch, logged and counted in
    `skipped` ('skip')."""

    decode_crop = True

    def __init__(self, data: StreamData, batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 crop_scale: Sequence[float] = (0.6, 1.0), crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
                 on_bad_file: str = "fail") -> None:
        super().__init__(len(data), data.name, batch_size, shuffle, drop_last, seed, rank, world_size)
        self.data = data
        self.num_workers = num_workers
        self.decoder = DecodeBatches(data, seed, tuple(crop_scale), tuple(crop_ratio))
        self.on_bad_file = on_bad_file
        self.skipped = 0
        self.pin = False
        self._loader: torch.utils.data.DataLoader | None = None

    def stage(self, device: torch.device) -> str:
        """On CUDA the batches come in pinned memory, so the copy to the device is asynchronous."""
        self.pin = device.type == "cuda"
        return "stream"

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = torch.utils.data.DataLoader(
                self.decoder, batch_size=None, sampler=_Keys(self), num_workers=workers, collate_fn=_as_is,
                pin_memory=self.pin, prefetch_factor=2 if workers else None)
        return self._loader

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # The position is read on the first next(), when the DataLoader iterator (and its sampler) starts.
        epoch, start = self.epoch, self.consumed
        it = iter(self._dataloader())
        try:
            for b, (images, labels, bad) in enumerate(it, start=start):
                if bad:
                    report_bad(bad, self.on_bad_file, self.skipped)
                    self.skipped += len(bad)
                    if not len(images):
                        raise ByonError(f"every image of a batch of {len(bad)} is unreadable (first: "
                                        f"'{bad[0][0]}')")
                self.consumed = b + 1
                yield images, labels
        finally:
            # Workers of a pass left part-way (a stop, an error) are ended now: left to the garbage collector,
            # their shutdown can wait out torch's 5 s status timeouts.
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        self.epoch, self.consumed = epoch + 1, 0


def open_imagefolder(root: str | Path | None, split: str, img_size: int) -> StreamData:
    """The split of an image folder, listed, not read (`imagefolder.list_imagefolder`)."""
    folder, files, labels, classes = list_imagefolder(root, split)
    y = torch.tensor(labels, dtype=torch.int64) if classes else None
    return StreamData(FolderReader.of(folder, files), y, classes, "imagefolder", str(folder), img_size)
