"""Where dataset files are looked for: the given root, then $BYON_DATA, then system folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV = "BYON_DATA"


def candidate_dirs(root: str | Path | None, subdirs: Sequence[str], system: Sequence[Path] = ()) -> list[Path]:
    """root, root/<sub>..., $BYON_DATA, $BYON_DATA/<sub>..., then the system folders, without repeats."""
    bases = [Path(root).expanduser()] if root else []
    env = os.environ.get(DATA_ENV)
    if env:
        bases.append(Path(env).expanduser())
    out: list[Path] = []
    for base in bases:
        for sub in ("", *subdirs):
            out.append(base / sub if sub else base)
    out.extend(system)
    return list(dict.fromkeys(out))


def places(dirs: Sequence[Path]) -> str:
    """'a, b, c' or a note that nothing was searched."""
    if not dirs:
        return f"nowhere: no --data-root given and ${DATA_ENV} unset"
    return ", ".join(str(d) for d in dirs)
