"""The non-finite guard: a NaN loss or gradient skips the step without a trace; too many stop the run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from byon.cli import main
from byon.methods.byon import BYON
from byon.methods.mae import MAE
from byon.rundir import read_checkpoint

TINY = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress",
        "--epochs", "1"]
NAN = float("nan")


def nan_loss_at(monkeypatch: pytest.MonkeyPatch, cls: type, steps: set[int], term: str) -> None:
    """`cls.forward` returns a NaN loss (and NaN `term`) at the given global steps."""
    forward = cls.forward

    def patched(self, batch, ctx):
        out = forward(self, batch, ctx)
        if ctx.step in steps:
            out["loss"] = out["loss"] * NAN
            out[term] = out[term] * NAN
        return out

    monkeypatch.setattr(cls, "forward", patched)


def nan_grad_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """MAE's loss stays finite but the gradient of encoder.cls_token is NaN at the given steps."""
    forward = MAE.forward

    def patched(self, batch, ctx):
        out = forward(self, batch, ctx)
        if ctx.step in steps:
            h = self.encoder.cls_token * 1.0
            h.register_hook(lambda g: torch.full_like(g, NAN))
            out["loss"] = out["loss"] + 0.0 * h.sum()
        return out

    monkeypatch.setattr(MAE, "forward", patched)


def error_line(stderr: str) -> str:
    """The one `byon: error:` line (library warnings may share stderr; a traceback may not)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("byon: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def state(run: Path) -> dict:
    return read_checkpoint(run / "checkpoints" / "last.ckpt")


def assert_same_weights_and_optimizer(a: dict, b: dict) -> None:
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_a_nan_step_changes_nothing_and_is_counted(tmp_path, monkeypatch):
    """BYON (EMA teacher, persistent timestep histogram): 2 good steps == 2 good steps + 1 NaN step."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = ["pretrain", "--method", "byon", *TINY, "--set", "train.log_every_n_steps=1", "optim.grad_clip=1.0", "--out"]
    assert main([*args, str(ref), "--max-steps", "2"]) == 0
    nan_loss_at(monkeypatch, BYON, {2}, "contrastive")
    assert main([*args, str(run), "--max-steps", "3"]) == 0
    a, b = state(ref), state(run)
    assert b["global_step"] == 3 and b["byon"]["skipped_steps"] == 1
    assert_same_weights_and_optimizer(a, b)  # no update, no EMA update, buffers (t_hist) restored
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1
    with open(run / "logs" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("train/skipped_steps")]
    assert [(int(r["step"]), float(r["train/skipped_steps"])) for r in logged] == [(2, 1.0)]


def test_too_many_nan_losses_stop_the_run_keeping_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = ["pretrain", "--method", "mae", *TINY, "--set", "train.max_bad_steps=3", "train.ckpt_every_steps=1",
            "--out"]
    assert main([*args, str(ref), "--max-steps", "1"]) == 0
    nan_loss_at(monkeypatch, MAE, {1, 2, 3}, "recon")
    capsys.readouterr()
    assert main([*args, str(run)]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("byon: error: non-finite loss (loss, recon) at step 3, 3 steps in a row "
                          "(train.max_bad_steps=3); stopped, the last good checkpoint is kept")
    kept = state(run)
    assert kept["global_step"] == 3 and kept["byon"]["skipped_steps"] == 2  # saved after the 2nd skip
    for k, v in state(ref)["state_dict"].items():  # the weights after the one good step
        assert torch.equal(v, kept["state_dict"][k]), k


def test_a_nan_gradient_with_a_finite_loss_is_caught_and_named(tmp_path, monkeypatch, capsys):
    nan_grad_at(monkeypatch, {1, 2})
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["pretrain", "--method", "mae", *TINY, "--set", "train.max_bad_steps=2", "--out", str(run)]) == 2
    err = error_line(capsys.readouterr().err)
    assert "byon: error: non-finite gradient (of encoder.cls_token) at step 2, 2 steps in a row" in err
    # no checkpoint was saved before the stop: the message promises none
    assert "stopped before the first checkpoint, so there is nothing to resume" in err
    assert not list((run / "checkpoints").glob("*.ckpt"))
    assert not (run / "checkpoints" / "last.ckpt").exists()  # nothing good was ever checkpointed


DDP_SCRIPT = """
import sys
import torch
from byon.cli import main
from byon.methods.mae import MAE

forward = MAE.forward


def nan_on_rank_1_at_step_1(self, batch, ctx):
    out = forward(self, batch, ctx)
    if ctx.step == 1 and torch.distributed.get_rank() == 1:
        out["loss"] = out["loss"] * float("nan")
    return out


MAE.forward = nan_on_rank_1_at_step_1
sys.exit(main(sys.argv[1:]))
"""


def test_a_nan_on_one_ddp_rank_skips_the_step_on_every_rank(tmp_path):
    """No hang (every rank still runs backward) and one shared decision: both ranks skip step 1."""
    import os
    import subprocess
    import sys

    script = tmp_path / "nan_ddp.py"
    script.write_text(DDP_SCRIPT)
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(script), "pretrain", "--method", "mae", "--accelerator", "cpu", "--devices", "2",
         "--strategy", "ddp", "--max-steps", "3", *TINY, "--out", str(run)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1
    ckpt = state(run)
    assert ckpt["byon"]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
