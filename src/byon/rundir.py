"""A run directory from the outside: atomic writes, its checkpoints (found, read, with one-line errors for
unreadable files), the trained method loaded back out of it, and the device to put it on.

Every file byon writes (checkpoints, exports, run and bench JSONs) goes through `atomic_write`: it is written
to a hidden temporary file in the same folder, flushed and fsync'ed, then moved over the target with
`os.replace` (atomic on POSIX) and the folder fsync'ed. A crash or `kill -9` at any point leaves either the
old file or the new one, never a torn one; a stray temporary file is ignored by `*.ckpt` globs and removed at
the next run start; a failed write (a full disk) is a one-line `ByonError`. The Lightning side (the
CheckpointIO plugin and the step-interval callback) is in `byon.engine.callbacks`, so reading a checkpoint does
not import Lightning.

Reading is `torch.load(weights_only=True)`: a byon checkpoint holds only tensors and plain dicts, lists and
scalars, so nothing in a shared run directory can run code on the reader's machine. A file that needs pickled
code is refused in one line unless the user passes `--trust-checkpoint` (`trust_checkpoints`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
import yaml

from byon.config import RunConfig
from byon.data import DataInfo
from byon.errors import ByonError
from byon.methods import METHODS, build_config, build_method, methods_with

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"  # temporary files are named .<target name>.tmp-<pid>-<random>
_TRUSTED = False  # set by `--trust-checkpoint` only


def trust_checkpoints(on: bool = True) -> None:
    """`--trust-checkpoint`: load checkpoints with full unpickling (can run code the file names) in this
    process. Never the default."""
    global _TRUSTED
    _TRUSTED = on


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load` under the process's trust setting: weights only (tensors and plain containers) unless
    `trust_checkpoints()` was called. A file that needs pickled code is a one-line `ByonError`."""
    try:
        return torch.load(path, map_location=map_location, weights_only=not _TRUSTED)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:
            raise
        raise ByonError(f"checkpoint '{path}' needs pickled code to load ({found.group(1)}), which could run "
                        f"anything on this machine; byon checkpoints hold none — if you trust whoever wrote it, "
                        f"pass --trust-checkpoint") from None


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[BinaryIO], Any], what: str = "file") -> None:
    """`writer(f)` into a binary file that replaces `path` whole or not at all (never a partly written file). A
    write that fails (full disk, read-only folder) is a one-line `ByonError` naming `what` was written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise _write_error(path, e, what) from None
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError | RuntimeError):  # torch's zip writer turns a failed write into RuntimeError
            raise _write_error(path, e, what) from None
        raise
    _fsync_dir(path.parent)


def _write_error(path: Path, e: BaseException, what: str) -> ByonError:
    """A failed write as one line: what failed, why, and that the earlier files are intact."""
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)
    if not full and isinstance(e, RuntimeError):  # torch's message hides the errno: ask the disk
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(path.parent).free < 64 << 20
    why = "no space left on the device" if full else (getattr(e, "strerror", None) or type(e).__name__)
    blocker = next((a for a in path.parents if a.exists()), None)
    if isinstance(e, FileExistsError | NotADirectoryError) and blocker is not None and not blocker.is_dir():
        why = f"'{blocker}' is a file, not a folder"
    then = ("the earlier checkpoints are intact — free space or fix the folder, then continue with --resume auto"
            if what == "checkpoint" else "nothing earlier was overwritten — choose a writable place with free space")
    return ByonError(f"cannot write {what} '{path}': {why}; {then}")


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` through `atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f), what="checkpoint")


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON through `atomic_write`."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


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
        ckpt = torch_load(path, map_location)
    except ByonError:
        raise
    except Exception as e:  # noqa: BLE001 — any unreadable checkpoint gets the same one-line answer
        raise ByonError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it is truncated or not a byon "
                        f"checkpoint — use an earlier one from the same checkpoints/ folder") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("byon"), dict) or "state_dict" not in ckpt:
        raise ByonError(f"'{path}' is not a byon checkpoint (no 'byon' metadata); give a .ckpt file a "
                        f"`byon pretrain` run wrote")
    return ckpt


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first: `last.ckpt` (or the newest `last-vN.ckpt` that older versions,
    through Lightning's version counter, could leave), then the numbered epoch/step ones by name."""
    ckpts = run_dir / "checkpoints"
    if not ckpts.is_dir():
        return []
    lasts = sorted(ckpts.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return lasts + sorted((p for p in ckpts.glob("*.ckpt") if not p.name.startswith("last")), reverse=True)


def checkpoint_names(found: list[Path]) -> str:
    """'last, epoch-2, epoch-1, ...': the `--checkpoint` names of a run's checkpoints, newest first."""
    names = ["last" if p.name.startswith("last") else "epoch-" + str(int(p.name[6:10])) for p in found
             if p.name.startswith(("last", "epoch="))]
    return ", ".join(dict.fromkeys(names)) or "none"


def find_checkpoint(run_dir: Path, choice: str | None = None) -> Path:
    """The checkpoint `--checkpoint` names: None the newest; 'last'; 'epoch-N' (epoch N's newest save, as in
    `epoch=000N[-step=...].ckpt`); or the path of a .ckpt file."""
    found = checkpoints_newest_first(run_dir)
    if choice is None:
        if found:
            return found[0]
        raise ByonError(f"no checkpoint in '{run_dir}/checkpoints'; give the directory a `byon pretrain --out` "
                        f"wrote")
    epoch = re.fullmatch(r"epoch-(\d+)", choice)
    if choice == "last" or epoch:
        prefix = "last" if choice == "last" else f"epoch={int(epoch.group(1)):04d}"
        hits = [p for p in found if p.name.startswith(prefix)]
        if hits:
            return hits[0]
    elif Path(choice).is_file():
        return Path(choice)
    raise ByonError(f"--checkpoint {choice}: no such checkpoint in '{run_dir}/checkpoints'; give last, epoch-N or "
                    f"a .ckpt path (this run has: {checkpoint_names(found)})")


def read_newest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """`--resume auto`: the newest checkpoint that reads, with a warning for each newer one that does not (a
    disk error or a hand-copied file can spoil one; the writes themselves are atomic)."""
    found = checkpoints_newest_first(run_dir)
    for i, path in enumerate(found):
        try:
            return path, read_checkpoint(path)
        except ByonError as e:
            if i + 1 == len(found):
                raise ByonError(f"--resume auto: none of the {len(found)} checkpoints in '{run_dir}/checkpoints' "
                                f"can be read (the oldest: {e}); start afresh with another --out") from None
            log.warning("%s; resuming from the next newest, '%s'", e, found[i + 1].name)
    raise ByonError(f"no checkpoint in '{run_dir}/checkpoints'; give the directory a `byon pretrain --out` wrote")


def readout_config(config: dict[str, Any], readout: dict[str, Any] | None) -> dict[str, Any]:
    """A run's config dict with read-out settings changed: `readout` {key: value} of the run's method section,
    each among the method's `readout` keys — the ones that choose how a trained network is read out (DDAE's
    feature block and t, l-DAE's probe t, ...), never what was trained. Error on any other key."""
    if not readout:
        return config
    method = config["method"]
    allowed = METHODS[method].readout if method in METHODS else ()
    for key in readout:
        if key not in allowed:
            settable = ", ".join(f"{method}.{k}" for k in allowed) or "none"
            raise ByonError(f"{method}.{key} is not a read-out setting of '{method}' (it would change the trained "
                            f"network); settable at evaluation: {settable}")
    return config | {method: (config.get(method) or {}) | dict(readout)}


def load_run(run_dir: str | Path, map_location: str = "cpu", readout: dict[str, Any] | None = None,
             checkpoint: str | None = None) -> tuple[RunConfig, torch.nn.Module]:
    """Rebuild a run's method from its checkpoint (weights loaded, eval mode), with the read-out settings
    `readout` (`readout_config`) in place of the trained ones. `checkpoint`: which one (`find_checkpoint`;
    default the newest)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ByonError(f"run directory '{run_dir}' does not exist; pass the --out of a `byon pretrain` run")
    ckpt_path = find_checkpoint(run_dir, checkpoint)
    try:
        ckpt = read_checkpoint(ckpt_path, map_location)
    except ByonError as e:
        others = [p for p in checkpoints_newest_first(run_dir) if p != ckpt_path]
        if checkpoint is not None or not others or "cannot be read" not in str(e):
            raise
        raise ByonError(f"{str(e).split(' — ')[0]} — pick another with --checkpoint (this run also has: "
                        f"{checkpoint_names(others)})") from None
    meta = ckpt["byon"]
    run_method = config_method(run_dir / "config.yaml")
    if run_method is not None and run_method != meta["config"]["method"]:
        raise ByonError(f"checkpoint '{ckpt_path}' was trained with method '{meta['config']['method']}' but the "
                        f"run's config.yaml says '{run_method}'; the checkpoint belongs to another run")
    cfg = build_config(readout_config(meta["config"], readout))
    d = meta["data_info"]
    info = DataInfo(name=d["name"], img_size=d["img_size"], in_chans=d["in_chans"], num_classes=d["num_classes"],
                    mean=tuple(d["mean"]), std=tuple(d["std"]))
    method, _ = build_method(cfg, info)
    state = {k.removeprefix("method."): v for k, v in ckpt["state_dict"].items() if k.startswith("method.")}
    try:
        method.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else type(e).__name__
        raise ByonError(f"checkpoint '{ckpt_path}' does not hold the weights of a '{cfg.method}' model ({first}); "
                        f"it belongs to another method or library version") from None
    method.eval()
    return cfg, method


def pick_device(device: str | None = None) -> torch.device:
    """`device`, else cuda where there is one, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (None: left as it is), and given back after it."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_run_for(run_dir: str | Path, hook: str | None, purpose: str, device: str | None = None,
                 checkpoint: str | None = None) -> tuple[RunConfig, torch.nn.Module, torch.device]:
    """`load_run` for a command that needs the method hook `hook` (None: any method will do): the config, the
    method in eval mode on `device` (`pick_device`) and that device. A method without the hook is a ByonError
    naming `purpose` (what needs the hook, e.g. 'sampling images') and the registered methods that have it."""
    cfg, method = load_run(run_dir, checkpoint=checkpoint)
    if hook is not None and not hasattr(method, hook):
        names = methods_with(hook)
        fix = f"use a run of {', '.join(names)}" if names else "no registered method has one"
        raise ByonError(f"method '{cfg.method}' has no '{hook}' hook (needed for {purpose}); {fix}")
    dev = pick_device(device)
    return cfg, method.to(dev).eval(), dev


def config_method(path: Path) -> str | None:
    """The `method:` of a run's config.yaml, or None when there is none to read."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data.get("method") if isinstance(data, dict) else None
