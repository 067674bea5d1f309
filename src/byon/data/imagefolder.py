"""A folder of image files (PIL): class sub-folders give labels; train/ + test/ (or val/) give splits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from byon.data.imagedata import ImageData
from byon.errors import ByonError, unknown

log = logging.getLogger(__name__)

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
BAD_FILE = ("fail", "skip")
TEST_DIRS = ("test", "val")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folder(root: Path, split: str) -> tuple[Path, list[str]]:
    """The split's folder and the class names shared by both splits (sorted union of class folders)."""
    test = next((root / t for t in TEST_DIRS if (root / t).is_dir()), None)
    if (root / "train").is_dir() and test is not None:
        folders = [root / "train", test]
        folder = folders[0] if split == "train" else folders[1]
    elif split == "train":
        folders = [root]
        folder = root
    else:
        raise ByonError(f"image folder '{root}' has no train/ and test/ (or val/) sub-folders, so it holds only a "
                        f"training split; for a test split move the images into {root / 'train'}/<class>/ and "
                        f"{root / 'test'}/<class>/, or hold images out instead (pretrain with --set data.val_size=N, "
                        f"then byon eval --split val)")
    names = sorted({d.name for f in folders for d in _class_dirs(f) if _images_in(d, recursive=True)})
    return folder, names


def _read(path: Path, image_size: int | None) -> np.ndarray:
    """(H, W) for grayscale files, (H, W, 3) otherwise; resized (shorter side, centre crop) when asked."""
    with Image.open(path) as im:
        im.load()
        im = im.convert("L" if im.mode in GRAY_MODES else "RGB")
    if image_size is not None and im.size != (image_size, image_size):
        w, h = im.size
        s = image_size / min(w, h)
        nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
    return np.asarray(im, dtype=np.uint8)


def read_images(files: list[Path], read: Callable[[Path], np.ndarray], folder: Path, on_bad_file: str,
                skip_hint: str) -> tuple[list[np.ndarray], list[int]]:
    """read(path) for every file; an unreadable one is an error (`fail`) or skipped and reported (`skip`).
    Returns the arrays and the indices (into `files`) they came from."""
    arrays, keep, bad = [], [], []
    for i, path in enumerate(files):
        try:
            arrays.append(read(path))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            if on_bad_file == "fail":
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ByonError(f"cannot read image '{path}' ({reason}); remove or replace it, or skip unreadable "
                                f"files with {skip_hint}") from None
            bad.append(path)
            continue
        keep.append(i)
    if bad:
        log.warning("skipped %d unreadable image file(s) in '%s' (first: '%s')", len(bad), folder, bad[0])
    if not arrays:
        raise ByonError(f"image folder '{folder}' holds no readable images ({len(bad)} unreadable files skipped)")
    return arrays, keep


def list_imagefolder(root: str | Path | None, split: str = "train") -> tuple[Path, list[Path], list[int], list[str]]:
    """(the split's folder, its image files, their labels (empty when unlabelled), the class names), read from the
    directory listing alone: no image is opened."""
    if root is None:
        raise ByonError("the imagefolder dataset needs a folder: pass --data-root DIR")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ByonError(f"image folder '{root}' does not exist or is not a folder; pass --data-root DIR")
    folder, classes = split_folder(root, split)
    loose = _images_in(folder, recursive=False)
    if classes and loose:
        raise ByonError(f"image folder '{folder}' has both class sub-folders and {len(loose)} images directly in "
                        f"it (e.g. '{loose[0].name}'); move the loose images into a class folder or elsewhere")
    if classes:
        files, labels = [], []
        for k, name in enumerate(classes):
            found = _images_in(folder / name, recursive=True) if (folder / name).is_dir() else []
            files += found
            labels += [k] * len(found)
    else:
        files, labels = loose, []
    if not files:
        raise ByonError(f"image folder '{folder}' holds no images ({', '.join(sorted(EXTENSIONS))}), neither "
                        f"directly nor in class sub-folders")
    return folder, files, labels, classes


def load_imagefolder(root: str | Path | None, split: str = "train", image_size: int | None = None,
                     on_bad_file: str = "fail") -> ImageData:
    """uint8 (N, C, H, W) with C = 1 when every image is grayscale, else 3; labels from class sub-folders
    (sorted names), or None when the images sit directly in the folder."""
    if on_bad_file not in BAD_FILE:
        raise unknown("on_bad_file value", on_bad_file, BAD_FILE)
    folder, files, labels, classes = list_imagefolder(root, split)

    arrays, keep = read_images(files, lambda path: _read(path, image_size), folder, on_bad_file,
                               "on_bad_file='skip' (--set data.on_bad_file=skip)")

    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        (h0, w0), (h1, w1) = sorted(sizes)[:2]
        raise ByonError(f"images in '{folder}' have {len(sizes)} different sizes (e.g. {h0}x{w0} and {h1}x{w1}); "
                        f"resize them all with image_size=N (e.g. --set data.image_size={min(h0, w0, h1, w1)})")
    if all(a.ndim == 2 for a in arrays):
        images = torch.from_numpy(np.stack(arrays)[:, None])
    else:
        rgb = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        images = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([labels[i] for i in keep], dtype=torch.int64) if classes else None
    return ImageData(images, y, classes, "imagefolder", str(folder))
