"""The one exception type the CLI turns into a one-line message (no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ByonError(Exception):
    """A user-facing error: what was wrong and how to fix it, on one line."""


class Interrupted(ByonError):
    """A run stopped by a signal after saving a resumable checkpoint; the CLI exits with `exit_code`
    (128 + the signal's number, the shell's and SLURM's convention)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def suggest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, valid: Iterable[str]) -> ByonError:
    valid = sorted(valid)
    return ByonError(f"unknown {kind} '{name}'{suggest(name, valid)}; valid: {', '.join(valid)}")
