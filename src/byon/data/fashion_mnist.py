"""Fashion-MNIST from the four idx files (gzipped or raw)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import torch
from torch import Tensor

from byon.data.imagedata import ImageData
from byon.data.locate import candidate_dirs, places
from byon.errors import ByonError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SUBDIRS = ("fashion-mnist", "FashionMNIST/raw")
# Where the Debian package `dataset-fashion-mnist` puts the files; a module constant so tests can move it.
SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]
IMAGES_MAGIC = 2051  # 0x0803: unsigned byte, 3 dims
LABELS_MAGIC = 2049  # 0x0801: unsigned byte, 1 dim
HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist`, or download the four idx files from "
              "https://github.com/zalandoresearch/fashion-mnist (data/fashion) and pass --data-root DIR")
HOW_TO_FIX = ("re-download it from https://github.com/zalandoresearch/fashion-mnist (data/fashion) or reinstall "
              "it with `apt-get install --reinstall dataset-fashion-mnist`")


def _corrupt(path: Path, what: str) -> ByonError:
    return ByonError(f"Fashion-MNIST file '{path}' is truncated or corrupt: {what}; {HOW_TO_FIX}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ByonError(f"cannot read Fashion-MNIST file '{path}': {e.strerror}; check its permissions") from None
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw idx file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _corrupt(path, f"damaged gzip stream ({reason})") from None


def read_idx(path: str | Path, magic: int | None = None) -> Tensor:
    """An idx file of unsigned bytes (gzipped or raw) as a uint8 tensor of the dims in its header; checks
    the magic number (when given), the header and that the payload has exactly prod(dims) bytes."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise _corrupt(path, f"only {len(data)} bytes, not even an idx header")
    found = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise _corrupt(path, f"magic number {found} is not an unsigned-byte idx file's")
    if magic is not None and found != magic:
        raise _corrupt(path, f"magic number {found}, expected {magic}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _corrupt(path, f"header for {ndim} dims is cut short ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 1
    for d in dims:
        expected *= d
    if len(data) - header != expected:
        raise _corrupt(path, f"{len(data) - header} data bytes where the header {dims} needs {expected}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def _find(name: str, folder: Path) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(split: str, root: str | Path | None) -> tuple[Path, Path]:
    """(images, labels) paths of the split from the first folder that has both."""
    dirs = candidate_dirs(root, SUBDIRS, SYSTEM_DIRS)
    img_name, lbl_name = FILES[split]
    for d in dirs:
        images, labels = _find(img_name, d), _find(lbl_name, d)
        if images is not None and labels is not None:
            return images, labels
    raise ByonError(f"Fashion-MNIST {split} split not found (looked for {img_name}[.gz] and {lbl_name}[.gz] in "
                    f"{places(dirs)}); {HOW_TO_GET}")


def load_fashion_mnist(split: str, root: str | Path | None = None) -> ImageData:
    """uint8 (N, 1, 28, 28) images and int64 labels in 0..9."""
    img_path, lbl_path = find_files(split, root)
    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lbl_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise _corrupt(img_path, f"{len(images)} images but {len(labels)} labels in '{lbl_path}'")
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise _corrupt(lbl_path, f"label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
    return ImageData(images.unsqueeze(1), labels.long(), list(CLASSES), "fashion-mnist", str(img_path.parent))
