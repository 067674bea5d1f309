"""Crash-safe checkpoints: atomic writes, step-interval saving, and one-line errors for unreadable files.

A checkpoint is written to a hidden temporary file in the same folder, flushed and fsync'ed, then moved
over the target with `os.replace` (atomic on POSIX) and the folder fsync'ed. A crash or `kill -9` at any
point leaves either the old file or the new one, never a torn one; a stray temporary file is ignored by
`*.ckpt` globs and removed at the next run start. The Lightning side (the CheckpointIO plugin and the
step-interval callback) is in `byon.engine.callbacks`, so reading a checkpoint does not import Lightning.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from byon.errors import ByonError

TMP_MARK = ".tmp-"  # temporary files are named .<target name>.tmp-<pid>-<random>


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` that never leaves a partly written `path` behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files a killed save left in `folder`; returns them."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and TMP_MARK in p.name and p.is_file()]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A byon checkpoint as a dict; a truncated, corrupt or foreign file is a one-line `ByonError`."""
    path = Path(path)
    if not path.is_file():
        raise ByonError(f"checkpoint '{path}' not found; give a .ckpt file a `byon pretrain` run wrote")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 — any unreadable checkpoint gets the same one-line answer
        raise ByonError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it is truncated or not a byon "
                        f"checkpoint — use an earlier one from the same checkpoints/ folder") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("byon"), dict) or "state_dict" not in ckpt:
        raise ByonError(f"'{path}' is not a byon checkpoint (no 'byon' metadata); give a .ckpt file a "
                        f"`byon pretrain` run wrote")
    return ckpt


__all__ = ["atomic_save", "read_checkpoint", "remove_stale_temp_files"]
