"""Tiny run directories (synthetic data, `vit-test` encoder) shared by the run-level evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from byon.engine.run import train
from byon.methods import load_config


def tiny_run(root: Path, method: str, dataset: str, steps: int) -> Path:
    """`steps` = 0 is a random-init run (no training step)."""
    cfg = load_config(None, {"method": method, "data": {"dataset": dataset, "subset": 64},
                             "model": {"preset": "vit-test"},
                             "train": {"epochs": 1 if steps else 0, "max_steps": steps or None, "batch_size": 16,
                                       "progress": False}})
    return train(cfg, root / f"{method}-{dataset}")


@pytest.fixture(scope="session")
def gray_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MAE, 2 steps on the 1-channel synthetic dataset."""
    return tiny_run(tmp_path_factory.mktemp("eval"), "mae", "synthetic", 2)


@pytest.fixture(scope="session")
def rgb_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BYON at its initialisation on the 3-channel synthetic dataset."""
    return tiny_run(tmp_path_factory.mktemp("eval"), "byon", "synthetic-rgb", 0)


@pytest.fixture(scope="session")
def nocls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """I-JEPA at its initialisation: an encoder without a CLS token."""
    return tiny_run(tmp_path_factory.mktemp("eval"), "ijepa", "synthetic", 0)


@pytest.fixture(scope="session")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BYON after 2 steps: its EMA (target) encoder differs from the online one."""
    return tiny_run(tmp_path_factory.mktemp("eval"), "byon", "synthetic", 2)


@pytest.fixture(scope="session")
def ddae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DDAE after 1 step: read-out settings (feature block and t) to choose at evaluation."""
    return tiny_run(tmp_path_factory.mktemp("eval"), "ddae", "synthetic", 1)
