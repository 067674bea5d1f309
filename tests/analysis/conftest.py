"""Tiny trained runs (synthetic data, `vit-test` encoder, a few steps) shared by the analysis tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from byon.engine.run import train
from byon.methods import load_config


def tiny_run(root: Path, method: str) -> Path:
    cfg = load_config(None, {"method": method, "data": {"dataset": "synthetic", "subset": 64},
                             "model": {"preset": "vit-test"},
                             "train": {"epochs": 1, "max_steps": 3, "batch_size": 16, "progress": False,
                                       "log_every_n_steps": 1}})
    return train(cfg, root / method)


@pytest.fixture(scope="session")
def mae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("analysis"), "mae")


@pytest.fixture(scope="session")
def byon_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("analysis"), "byon")


@pytest.fixture
def png_ok():
    """A check that a file is a non-trivial PNG."""

    def check(path: str | Path) -> bool:
        data = Path(path).read_bytes()
        return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"

    return check
