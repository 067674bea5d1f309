"""Tar shards of an image folder for many nodes: `write_shards` (`byon data shard`) and a random-access reader.

Layout of OUT: `shards.json` (format, classes, per split its shard files and image count) and per split
`OUT/<split>/shard-000000.tar, ...` plus `OUT/<split>/index.npz`. Each tar holds WebDataset-style members
`<key>.<ext>` (the image file's bytes, unchanged) and `<key>.cls` (the label as text, when labelled), so
WebDataset tools read the shards as they are. `index.npz` holds every image's shard, byte offset and size: the
reader fetches sample i with one positional read, so streaming shards deals exactly the samples, order, rank
shards and crops of streaming the folder they were written from (`StreamLoader`), resumes exactly, and each rank
reads only its own samples — from a shared file system on any number of nodes. Written with the standard
library's `tarfile` only.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from byon.data.imagefolder import TEST_DIRS, list_imagefolder
from byon.data.stream import StreamData
from byon.errors import ByonError

FORMAT = "byon-shards/1"
INDEX = "shards.json"


class ShardReader:
    """Sample i's bytes by one `os.pread` from its shard; file descriptors are opened lazily per process (a
    forked DataLoader worker opens its own)."""

    def __init__(self, folder: Path, shards: list[str], index: dict[str, np.ndarray]) -> None:
        self.folder, self.shards, self.index = folder, shards, index
        self._fds: dict[int, int] = {}
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}, "_pid": -1}

    def __len__(self) -> int:
        return len(self.index["offset"])

    def name(self, i: int) -> str:
        return f"{self.folder / self.shards[int(self.index['shard'][i])]}:{self.index['path'][i].decode()}"

    def read(self, i: int) -> bytes:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        s = int(self.index["shard"][i])
        fd = self._fds.get(s)
        if fd is None:
            fd = self._fds[s] = os.open(self.folder / self.shards[s], os.O_RDONLY)
        size = int(self.index["size"][i])
        blob = os.pread(fd, size, int(self.index["offset"][i]))
        if len(blob) != size:
            raise OSError(f"shard truncated: read {len(blob)} of {size} bytes")
        return blob

    def take(self, idx: Tensor) -> ShardReader:
        sel = idx.numpy()
        return ShardReader(self.folder, self.shards, {k: v[sel] for k, v in self.index.items()})


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path) as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}


def write_split(images: Path, split: str, out: Path, shard_size: int) -> dict[str, Any]:
    """One split of image folder `images` into `out/<split>/` (listing order kept: shard sample i is folder
    sample i). Returns the split's entry of shards.json."""
    folder, files, labels, classes = list_imagefolder(images, split)
    dest = out / split
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    shard, offset, size = (np.empty(len(files), dtype=np.int64) for _ in range(3))
    for start in range(0, len(files), shard_size):
        name = f"shard-{len(names):06d}.tar"
        tmp = dest / (name + ".tmp")
        keys = []
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(start, min(start + shard_size, len(files))):
                key = f"{i:09d}{files[i].suffix.lower()}"
                blob = files[i].read_bytes()
                info = tarfile.TarInfo(key)
                info.size, info.mode = len(blob), 0o644
                tf.addfile(info, io.BytesIO(blob))
                if classes:
                    cls = str(labels[i]).encode()
                    info = tarfile.TarInfo(f"{i:09d}.cls")
                    info.size, info.mode = len(cls), 0o644
                    tf.addfile(info, io.BytesIO(cls))
                keys.append((i, key))
        where = _member_offsets(tmp)
        for i, key in keys:
            shard[i] = len(names)
            offset[i], size[i] = where[key]
        os.replace(tmp, dest / name)
        names.append(name)
    paths = np.array([str(f.relative_to(folder)).encode() for f in files], dtype=bytes)
    label = np.array(labels if classes else [-1] * len(files), dtype=np.int64)
    np.savez(dest / "index.npz", shard=shard, offset=offset, size=size, label=label, path=paths)
    return {"images": len(files), "shards": names, "classes": classes, "source": str(folder)}


def write_shards(images: str | Path, out: str | Path, shard_size: int = 1000) -> dict[str, Any]:
    """Every split of image folder `images` (train, and test when it has train/ + test/ or val/) as tar shards
    of `shard_size` images in `out`; returns what shards.json records."""
    if shard_size < 1:
        raise ByonError(f"--shard-size must be a positive number of images per shard, got {shard_size}")
    images, out = Path(images).expanduser(), Path(out).expanduser()
    if (out / INDEX).exists():
        raise ByonError(f"'{out}' already holds shards ({INDEX}); write them to a new --out")
    splits = ["train"] + (["test"] if (images / "train").is_dir() and any((images / t).is_dir() for t in TEST_DIRS)
                          else [])
    meta = {"format": FORMAT, "splits": {s: write_split(images, s, out, shard_size) for s in splits}}
    (out / INDEX).write_text(json.dumps(meta, indent=1))
    return meta


def open_shards(root: str | Path | None, split: str, img_size: int) -> StreamData:
    """The split of shards written by `write_shards`, read from its index only."""
    if root is None:
        raise ByonError("the shards dataset needs the shards' folder: pass --data-root DIR")
    root = Path(root).expanduser()
    if not (root / INDEX).is_file():
        raise ByonError(f"'{root}' holds no {INDEX}; write shards of an image folder with "
                        f"byon data shard --images DIR --out {root}")
    meta = json.loads((root / INDEX).read_text())
    if meta.get("format") != FORMAT:
        raise ByonError(f"'{root / INDEX}' is format {meta.get('format')!r}, not {FORMAT}; write the shards again")
    if split not in meta["splits"]:
        raise ByonError(f"the shards in '{root}' have no {split} split (they have: {', '.join(meta['splits'])})")
    entry = meta["splits"][split]
    with np.load(root / split / "index.npz", allow_pickle=False) as z:
        index = {k: z[k] for k in ("shard", "offset", "size", "label", "path")}
    label = index.pop("label")
    labels = torch.from_numpy(label) if entry["classes"] else None
    reader = ShardReader(root / split, list(entry["shards"]), index)
    return StreamData(reader, labels, list(entry["classes"]), "shards", str(root / split), img_size)
