"""End-to-end engine tests on the synthetic dataset with the `vit-test` encoder."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byon.cli import main
from byon.rundir import load_run

TINY = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress",
        "--set", "train.log_every_n_steps=1"]


def losses(run: Path) -> list[float]:
    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_pretrain_then_eval_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "mae", "--epochs", "2", *TINY, "--out", str(run)]) == 0
    for f in ("config.yaml", "summary.json", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["flops_per_image"] > 0
    assert len(losses(run)) == 8
    capsys.readouterr()
    assert main(["eval", "knn", "--run", str(run), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    assert 0.0 <= res["top1"] <= 100.0 and res["top1"] == res[f"top1_{res['default_feature']}"]
    assert main(["eval", "linear", "--run", str(run), "--json", "--linear-epochs", "2"]) == 0
    assert "top1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "eval" / "knn-synthetic.json").is_file()


@pytest.mark.parametrize("method", ["mae", "byon"])
def test_rgb_images_pretrain(tmp_path, method):
    """Three-channel data through the whole step (per-channel normalisation, augmentation, saliency)."""
    run = tmp_path / "rgb"
    args = [a if a != "synthetic" else "synthetic-rgb" for a in TINY]
    assert main(["pretrain", "--method", method, "--epochs", "1", "--max-steps", "2", *args, "--out", str(run)]) == 0
    assert len(losses(run)) == 2 and all(math.isfinite(x) for x in losses(run))


def test_resume_continues_the_identical_loss_sequence(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["pretrain", "--method", "mae", "--epochs", "2", *TINY, "--out", str(straight)]) == 0
    # the same run stopped after one epoch, then resumed to two
    assert main(["pretrain", "--method", "mae", "--epochs", "2", "--max-steps", "4", *TINY, "--out", str(resumed)]) == 0
    assert main(["pretrain", "--method", "mae", "--epochs", "2", *TINY, "--out", str(resumed),
                 "--resume", "auto"]) == 0
    assert losses(straight) == losses(resumed)  # bitwise on CPU
    _, a = load_run(straight)
    _, b = load_run(resumed)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


def test_resume_with_another_method_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "mae", "--max-steps", "1", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--method", "mae", "--model", "vit-micro", *TINY[:4], "--out", str(run),
                 "--resume", "auto"]) == 2
    assert "model differs from the checkpoint's" in capsys.readouterr().err


def test_zero_epochs_gives_a_random_init_run(tmp_path):
    run = tmp_path / "rand"
    assert main(["pretrain", "--method", "mae", "--epochs", "0", *TINY, "--out", str(run)]) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_two_process_ddp_on_cpu_trains(tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "byon.cli", "pretrain", "--method", "mae", "--accelerator", "cpu", "--devices", "2",
         "--strategy", "ddp", "--max-steps", "2", *TINY, "--out", str(run)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 and summary["global_batch"] == 32


@pytest.mark.parametrize("extra", [[], ["--max-steps", "3"]])
def test_a_run_shorter_than_the_log_interval_still_logs_its_last_step_and_records_its_config(tmp_path, extra):
    import yaml

    run = tmp_path / "run"
    assert main(["pretrain", "--method", "mae", "--epochs", "1", *TINY, "--set", "train.log_every_n_steps=50",
                 *extra, "--out", str(run)]) == 0
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    last = 2 if extra else 3  # 4 steps an epoch, or stopped after 3
    assert [int(r["step"]) for r in rows] == [last]
    assert yaml.safe_load((run / "logs" / "tb" / "hparams.yaml").read_text()) == yaml.safe_load(
        (run / "config.yaml").read_text())
    if not extra:  # and the next segment continues on the same schedule
        assert main(["pretrain", "--method", "mae", "--epochs", "2", *TINY, "--set", "train.log_every_n_steps=50",
                     "--out", str(run), "--resume", "auto"]) == 0
        with open(run / "logs" / "metrics.csv") as f:
            assert [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")] == [3, 7]
