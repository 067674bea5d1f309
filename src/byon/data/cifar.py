"""CIFAR-10 / CIFAR-100 from the python-pickle archive folders."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byon.data.imagedata import ImageData
from byon.data.locate import candidate_dirs, places
from byon.errors import ByonError

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    title: str
    folder: str  # what the python-version archive unpacks to
    archive: str
    files: dict[str, tuple[str, ...]]
    meta: str
    label_key: bytes
    names_key: bytes


LAYOUTS = {
    "cifar10": CifarLayout("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                           {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                           "batches.meta", b"labels", b"label_names"),
    "cifar100": CifarLayout("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
                            {"train": ("train",), "test": ("test",)}, "meta", b"fine_labels",
                            b"fine_label_names"),
}


def _how_to_get(lay: CifarLayout) -> str:
    return (f"CIFAR cannot be installed with apt: download the python version archive ({lay.archive}) from "
            f"{URL}, unpack it and pass --data-root DIR (the folder holding {lay.folder}, or {lay.folder} itself)")


# The batches hold only dicts, lists, bytes and numpy arrays; refusing every other global keeps a
# planted pickle from running code.
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric",
                "numpy")
    for name in ("_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar")
} | {("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED and not (module.startswith("numpy") and name.endswith("DType")):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, lay: CifarLayout) -> dict[bytes, Any]:
    try:
        with path.open("rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means the same thing: a damaged file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ByonError(f"{lay.title} file '{path}' is truncated or corrupt ({reason}); re-download the "
                        f"python version archive from {URL} and unpack it again") from None
    if not isinstance(obj, dict):
        raise ByonError(f"{lay.title} file '{path}' holds a {type(obj).__name__}, not a CIFAR batch dict; "
                        f"re-download the python version archive from {URL} and unpack it again")
    return obj


def find_folder(name: str, split: str, root: str | Path | None) -> Path:
    """The archive folder holding the split's batches and the meta file."""
    lay = LAYOUTS[name]
    dirs = candidate_dirs(root, (lay.folder,))
    needed = (*lay.files[split], lay.meta)
    for d in dirs:
        present = [f for f in needed if (d / f).is_file()]
        if len(present) == len(needed):
            return d
        if present:
            missing = ", ".join(f for f in needed if f not in present)
            raise ByonError(f"{lay.title} folder '{d}' is incomplete (missing {missing}); re-download the "
                            f"python version archive from {URL} and unpack it again")
    archives = [d / lay.archive for d in dirs if (d / lay.archive).is_file()]
    if archives:
        a = archives[0]
        raise ByonError(f"{lay.title} archive '{a}' is not unpacked; run `tar xzf {a} -C {a.parent}`")
    raise ByonError(f"{lay.title} not found (looked for {lay.folder} in {places(dirs)}); {_how_to_get(lay)}")


def load_cifar(name: str, split: str, root: str | Path | None = None) -> ImageData:
    """name: 'cifar10' | 'cifar100' → uint8 (N, 3, 32, 32) images, int64 labels (fine labels for 100)."""
    lay = LAYOUTS[name]
    folder = find_folder(name, split, root)
    images, labels = [], []
    for fname in lay.files[split]:
        path = folder / fname
        batch = _unpickle(path, lay)
        try:
            x = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[lay.label_key], dtype=np.int64)
            x = x.reshape(len(y), 3, 32, 32)
        except (KeyError, ValueError, TypeError) as e:
            raise ByonError(f"{lay.title} file '{path}' is not a valid batch ({type(e).__name__}: {e}); "
                            f"re-download the python version archive from {URL} and unpack it again") from None
        images.append(torch.from_numpy(x.copy()))
        labels.append(torch.from_numpy(y.copy()))
    meta_path = folder / lay.meta
    meta = _unpickle(meta_path, lay)
    if lay.names_key not in meta:
        raise ByonError(f"{lay.title} meta file '{meta_path}' has no {lay.names_key.decode()}; re-download the "
                        f"python version archive from {URL} and unpack it again")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[lay.names_key]]
    y = torch.cat(labels)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise ByonError(f"{lay.title} labels in '{folder}' fall outside 0..{len(classes) - 1}; re-download the "
                        f"python version archive from {URL} and unpack it again")
    return ImageData(torch.cat(images), y, classes, name, str(folder))
