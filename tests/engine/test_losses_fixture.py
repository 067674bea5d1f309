"""Bit-identical training: the per-step logged scalars of a 20-step run of every method on synthetic data must
equal the recorded ones (tests/fixtures/losses-20step.json). A refactor that changes any draw, op order or
default shows here. Re-record one method on purpose only, with the reason in the commit:
`BYON_RECORD=byol pytest tests/engine/test_losses_fixture.py` (BYON_RECORD=all: every method)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from byon.engine.run import train
from byon.methods import METHODS, build_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "losses-20step.json"
# 64 synthetic images, batch 16: 4 steps an epoch, 5 epochs
RUN = {"data": {"dataset": "synthetic", "subset": 64}, "model": {"preset": "vit-test"},
       "train": {"epochs": 5, "batch_size": 16, "progress": False, "log_every_n_steps": 1, "seed": 0}}
TIMING = {"train/images_per_s"}
# every method's default config, and a few non-default paths through the shared code
VARIANTS = {name: {"method": name} for name in METHODS} | {
    "byon-views-two": {"method": "byon", "byon": {"views": "two"}},
    "byol-joint": {"method": "byol", "byol": {"encoder_passes": "joint"}},  # before per-view passes: the old byol
}


def logged(run: Path) -> dict[str, list[float | None]]:
    """Every train/* column of the run's metrics.csv but the timing ones, step by step."""
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    keys = sorted(k for k in rows[0] if k.startswith("train/") and k not in TIMING)
    return {k: [float(r[k]) if r[k] != "" else None for r in rows] for k in keys}


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_20_step_losses_equal_the_recorded_ones(method, tmp_path):
    got = logged(train(build_config(RUN | VARIANTS[method]), tmp_path / "run"))
    assert len(got["train/loss"]) == 20
    record = os.environ.get("BYON_RECORD", "")
    recorded = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
    if record in ("all", method):
        FIXTURE.write_text(json.dumps(recorded | {method: got}, indent=1, sort_keys=True) + "\n")
        return
    assert got == recorded[method]
