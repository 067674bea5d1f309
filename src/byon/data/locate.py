"""Where dataset files are looked for: the given root alone, else $BYON_DATA, then system folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV = "BYON_DATA"


def candidate_dirs(root: str | Path | None, subdirs: Sequence[str], system: Sequence[Path] = ()) -> list[Path]:
    """An explicit root: root, root/<sub>... and nothing else (a root the user named is used alone or is an
    error, never quietly swapped for another copy). No root: $BYON_DATA, $BYON_DATA/<sub>..., then the system
    folders, without repeats."""
    env = os.environ.get(DATA_ENV)
    bases = [Path(root).expanduser()] if root else [Path(env).expanduser()] if env else []
    out: list[Path] = []
    for base in bases:
        for sub in ("", *subdirs):
            out.append(base / sub if sub else base)
    if not root:
        out.extend(system)
    return list(dict.fromkeys(out))


def places(dirs: Sequence[Path]) -> str:
    """'a, b, c' or a note that nothing was searched."""
    if not dirs:
        return f"nowhere: no --data-root given and ${DATA_ENV} unset"
    return ", ".join(str(d) for d in dirs)
