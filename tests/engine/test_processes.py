"""`train.devices: auto`: one DDP process per CPU core under `byon pretrain`, the global batch split over them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from byon.config import TrainConfig
from byon.engine.processes import physical_cores, plan_processes
from byon.errors import ByonError


def test_auto_on_a_multi_core_cpu_is_one_process_per_core_with_the_batch_split():
    p = plan_processes(TrainConfig(accelerator="cpu", batch_size=256), per_core=True, cores=4)
    assert (p.devices, p.strategy, p.num_threads, p.batch_size) == (4, "ddp", 1, 64)
    assert p.line.startswith("processes: 4 DDP processes x 1 thread")
    assert "global batch 256 = 64 per process" in p.line


@pytest.mark.parametrize("train, per_core, cores, why", [
    ({}, True, 1, "the CPU has 1 core"),
    ({}, False, 4, "a library call"),
    ({"num_threads": 2}, True, 4, "train.num_threads is set"),
    ({"strategy": "ddp_spawn"}, True, 4, "train.strategy is set"),
])
def test_auto_stays_one_process_and_says_why(train, per_core, cores, why):
    p = plan_processes(TrainConfig(accelerator="cpu", **train), per_core=per_core, cores=cores)
    assert (p.devices, p.batch_size) == (1, 256)
    assert p.line.startswith("processes: 1 process x ") and why in p.line


def test_explicit_devices_win():
    t = TrainConfig(accelerator="cpu", devices=2, batch_size=100)
    p = plan_processes(t, per_core=True, cores=4)
    assert (p.devices, p.strategy, p.num_threads, p.batch_size, p.line) == (2, "auto", None, 100, "")


def test_auto_on_a_gpu_is_one_device_as_before():
    p = plan_processes(TrainConfig(accelerator="gpu"), per_core=True, cores=8)
    assert (p.devices, p.batch_size, p.line) == (1, 256, "")


def test_a_batch_that_does_not_split_over_the_cores_is_a_clear_error():
    with pytest.raises(ByonError, match=r"train.batch_size 100 .* 3 CPU processes .* multiple of 3 \(e.g. 99\)"):
        plan_processes(TrainConfig(accelerator="cpu", batch_size=100), per_core=True, cores=3)


def test_physical_cores_counts_at_least_one():
    assert physical_cores() >= 1


def run_cli(out, *extra: str, sets: tuple[str, ...] = ()) -> str:
    """`byon pretrain` of a tiny MAE run as a user starts it (its own command line); → its output."""
    args = ["--method", "mae", "--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--epochs", "1",
            "--batch-size", "16", "--no-progress", *extra, "--out", str(out), "--set", "train.log_every_n_steps=1",
            *sets]
    done = subprocess.run([sys.executable, "-m", "byon.cli", "pretrain", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def losses(run) -> list[float]:
    with open(run / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.slow
@pytest.mark.skipif(physical_cores() < 2, reason="needs a CPU with 2 cores or more")
def test_pretrain_by_default_uses_every_core_and_trains_as_one_process_does(tmp_path):
    err = run_cli(tmp_path / "default")
    cores = physical_cores()
    assert err.splitlines()[0].startswith(f"processes: {cores} DDP processes x 1 thread"), err[:500]
    run_cli(tmp_path / "one", "--devices", "1", sets=("train.num_threads=1",))
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert (summary["world_size"], summary["global_batch"]) == (cores, 16)
    assert losses(tmp_path / "default") == pytest.approx(losses(tmp_path / "one"), rel=1e-5, abs=1e-7)
