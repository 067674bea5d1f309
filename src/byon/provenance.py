"""Where a run came from: the code (version, git commit, uncommitted changes) and the hardware it ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from byon.config import RunConfig
from byon.data import DataInfo


def version() -> str:
    """The installed byon's version (pyproject.toml)."""
    try:
        return importlib.metadata.version("byon")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """Whether tracked files under src/ differ from `git_commit()` (uncommitted changes); None outside a git
    checkout."""
    try:
        # --no-optional-locks: no index refresh, so no index.lock in the way of a concurrent git command
        out = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
                              ":/src"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def run_metadata(cfg: RunConfig, info: DataInfo) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "data_info": info.__dict__ | {"mean": list(info.mean), "std": list(info.std)},
            "version": version(), "commit": git_commit(), "torch": str(torch.__version__)}
