"""Shared fixtures: tiny configs and tiny data so the whole suite stays fast on 2 cores."""

from __future__ import annotations

import os

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
