"""Shared fixtures: tiny configs and tiny data so the whole suite stays fast on 2 cores."""

from __future__ import annotations

import os

import lightning.pytorch  # noqa: F401 — its log handler binds stderr now, not a test's capsys stream closed later
import pytest
import torch

os.environ.setdefault("BYON_TEST", "1")
torch.set_num_threads(1)  # tiny ops: threads only add barrier waits, worst on a busy machine

TINY_TRAIN = {"epochs": 1, "batch_size": 16, "progress": False, "log_every_n_steps": 1}


@pytest.fixture
def tiny_overrides() -> dict:
    """Overrides for a seconds-long run on the synthetic dataset with the `vit-test` encoder."""
    return {"data": {"dataset": "synthetic", "subset": 64}, "model": {"preset": "vit-test"},
            "train": dict(TINY_TRAIN)}


def user_error_message(err: str) -> str:
    """The one `byon: error:` line of a command's stderr, after checking the user-error contract: no traceback,
    the message and anything after it at most 3 lines, and nothing before it but progress logging (a fault
    mid-training follows Lightning's start-up lines). Returns the message without its prefix."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("byon: error: ")]
    assert len(errors) == 1, err
    assert len(lines) - errors[0] <= 3, err
    assert not any("rror" in line or "arning" in line for line in lines[:errors[0]]), err
    return lines[errors[0]].removeprefix("byon: error: ")


@pytest.fixture
def user_error(capsys: pytest.CaptureFixture):
    """user_error() → the message of the one-line error the last command wrote to stderr (`user_error_message`)."""
    return lambda: user_error_message(capsys.readouterr().err)


def tree_hashes(folder) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`, to show that a refused command changed nothing."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hashes():
    return tree_hashes
