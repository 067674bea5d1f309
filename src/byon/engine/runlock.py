"""One run per run directory: a fresh run needs an empty `--out` (or `--overwrite`), and a training run holds
an exclusive lock on it.

The lock is `flock` on an open file (`<run>/.byon.lock`): the kernel drops it when the process ends however it
ends, so a killed run never leaves a stale lock behind. The file also records the holder's pid and host, for
the message a second run gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from pathlib import Path

from byon.errors import ByonError

LOCK_NAME = ".byon.lock"


def launch_leader() -> bool:
    """Whether this is the process the user started (not a DDP worker Lightning or a launcher spawned): only it
    checks, locks and clears the run directory."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def run_contents(out: Path) -> list[str]:
    """The names in run directory `out` other than the lock file, sorted (empty when it does not exist)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)


def check_out(out: Path, resume: str | None, overwrite: bool) -> None:
    """Before any work: `--out` must be a directory to create, an empty one, or one that `--resume` continues
    or `--overwrite` clears."""
    if out.exists() and not out.is_dir():
        raise ByonError(f"--out '{out}' is a file, not a directory; give a new directory for the run")
    if overwrite and resume:
        raise ByonError("--overwrite clears the run directory and --resume continues it; give one of them")
    names = run_contents(out)
    if names and resume is None and not overwrite:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ByonError(f"run directory '{out}' is not empty ({shown}); continue that run with --resume auto, give "
                        f"a new --out, or pass --overwrite to delete its contents first")


class RunLock:
    """An exclusive lock on a run directory for as long as a run trains in it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.fd: int | None = None
        self.created = False  # whether acquire() made the directory (release() removes it again if still empty)

    def acquire(self) -> None:
        """Create the run directory and lock it; another live run holding it is a `ByonError`."""
        try:
            self.created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ByonError(f"cannot create run directory '{self.out}' ({e.strerror or e}); give an --out on a "
                            f"writable file system") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ByonError(f"run directory '{self.out}' is in use by a run that is still training ({holder}); "
                            f"wait for it to end or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd

    def clear(self) -> None:
        """`--overwrite`: delete everything in the locked run directory but the lock file."""
        for name in run_contents(self.out):
            p = self.out / name
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            except OSError as e:
                raise ByonError(f"--overwrite: cannot delete '{p}' ({e.strerror or e}); delete it yourself or give "
                                f"another --out") from None

    def release(self) -> None:
        """Unlock; a directory this lock created that holds nothing else (the run failed before writing) goes."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if self.created and not run_contents(self.out):
                (self.out / LOCK_NAME).unlink()
                self.out.rmdir()
        with contextlib.suppress(OSError):
            os.close(self.fd)  # closing the file drops the flock
        self.fd = None


__all__ = ["LOCK_NAME", "RunLock", "check_out", "launch_leader", "run_contents"]
