"""Exact mid-epoch resume: a run stopped or killed part-way and resumed repeats the straight run bitwise."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from byon.cli import main
from byon.data.synthetic import write_jpeg_folder
from byon.engine.module import PretrainModule

# 64 images / batch 16 = 4 steps per epoch; 3 epochs = 12 steps.
BASE = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress",
        "--epochs", "3"]
SET = ["train.log_every_n_steps=1", "train.ckpt_every_steps=3"]


def pretrain(method: str, out: Path, *extra: str, sets: tuple[str, ...] = ()) -> int:
    return main(["pretrain", "--method", method, *BASE, *extra, "--out", str(out), "--set", *SET, *sets])


def losses(run: Path) -> list[tuple[int, float]]:
    with open(run / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted 12-step runs the resumed ones must match."""
    runs = {}
    for method in ("mae", "byon"):
        runs[method] = tmp_path_factory.mktemp("straight") / method
        assert pretrain(method, runs[method]) == 0
    return runs


def test_stopped_mid_epoch_then_resumed_matches_the_straight_run(straight, tmp_path):
    run = tmp_path / "run"
    assert pretrain("mae", run, "--max-steps", "6") == 0  # stops half-way through epoch 1
    ckpt = final_state(run)
    assert ckpt["global_step"] == 6
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert pretrain("mae", run, "--resume", "auto") == 0
    assert [s for s, _ in losses(run)] == list(range(12))
    assert losses(run) == losses(straight["mae"])  # bitwise on CPU
    assert_same_state(final_state(run), final_state(straight["mae"]))


@pytest.mark.parametrize("method", ["mae", "byon"])
def test_killed_mid_epoch_then_resumed_matches_the_straight_run(straight, tmp_path, monkeypatch, method):
    run = tmp_path / "run"
    step_fn = PretrainModule.training_step

    def dies_at_step_7(self, batch, batch_idx):
        if self.global_step == 7:
            raise RuntimeError("killed")
        return step_fn(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", dies_at_step_7)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(method, run)
    monkeypatch.undo()
    assert final_state(run)["global_step"] == 6  # the step-interval checkpoint, mid-epoch 1
    assert pretrain(method, run, "--resume", "auto") == 0
    assert losses(run) == losses(straight[method])
    assert_same_state(final_state(run), final_state(straight[method]))
    if method == "byon":  # the EMA teacher and the persistent timestep histogram came back too
        sd = final_state(run)["state_dict"]
        assert any(k.startswith("method.target_encoder.") for k in sd) and int(sd["method.t_hist"].sum()) > 0


def test_keeps_the_last_k_step_checkpoints_and_a_last_pointer(straight):
    names = sorted(p.name for p in (straight["mae"] / "checkpoints").glob("*.ckpt"))
    # steps 3..12 saved (3, 4, 6, 8, 9, 12); keep_last=3 keeps the newest three
    assert names == ["epoch=0001-step=00000008.ckpt", "epoch=0002-step=00000009.ckpt",
                     "epoch=0002-step=00000012.ckpt", "last.ckpt"]


def test_resumed_run_sums_training_time_over_segments(tmp_path):
    run = tmp_path / "run"
    assert pretrain("mae", run, "--max-steps", "6") == 0
    first = final_state(run)["byon"]["train_time_s"]
    assert first > 0 and final_state(run)["byon"]["segments"] == 1
    assert pretrain("mae", run, "--resume", "auto") == 0
    summary = __import__("json").loads((run / "summary.json").read_text())
    assert summary["segments"] == 2
    assert summary["wall_time_s"] >= first + 0.5 * summary["segment_wall_time_s"]
    assert final_state(run)["byon"]["train_time_s"] > first


def test_resume_whose_checkpoint_callback_state_is_foreign_still_writes_last_ckpt(tmp_path):
    """A checkpoint whose ModelCheckpoint state does not load (an older byon named the callback differently)
    must not leave a stale last.ckpt beside a new last-v1.ckpt: --resume auto would pick the stale one."""
    run = tmp_path / "run"
    assert pretrain("mae", run, "--max-steps", "6") == 0
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt["callbacks"] = {k.replace("RunCheckpoint", "ModelCheckpoint"): v for k, v in ckpt["callbacks"].items()}
    torch.save(ckpt, path)
    assert pretrain("mae", run, "--resume", "auto", "--max-steps", "9") == 0
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))
    assert final_state(run)["global_step"] == 9
    assert pretrain("mae", run, "--resume", "auto") == 0
    assert losses(run)[-1][0] == 11


def test_resume_auto_falls_back_past_an_unreadable_last_ckpt(straight, tmp_path, caplog, capsys):
    run = tmp_path / "run"
    assert pretrain("mae", run, "--max-steps", "6") == 0
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a spoilt copy, as a disk error leaves
    newest = sorted(p.name for p in ckpts.glob("epoch=*.ckpt"))[-1]
    assert pretrain("mae", run, "--resume", "auto") == 0
    warned = [r.getMessage() for r in caplog.records if "resuming from the next newest" in r.getMessage()]
    assert warned and "last.ckpt' cannot be read" in warned[0] and newest in warned[0]
    assert_same_state(final_state(run), final_state(straight["mae"]))  # no step lost, none repeated wrongly
    assert losses(run)[-1] == losses(straight["mae"])[-1]

    for p in ckpts.glob("*.ckpt"):  # nothing readable left: a one-line error, not a fresh start over it
        p.write_bytes(b"not a checkpoint")
    assert pretrain("mae", run, "--resume", "auto") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("byon: error: --resume auto: none of the ") and "start afresh with another --out" in err


@pytest.mark.parametrize(("method", "sig"), [("mae", "SIGTERM"), ("byon", "SIGINT")])
def test_a_signal_saves_at_the_next_step_exits_nonzero_and_resume_matches_the_straight_run(
        straight, tmp_path, monkeypatch, capsys, user_error, method, sig):
    import json
    import os
    import signal

    run = tmp_path / "run"
    step_fn = PretrainModule.training_step

    def signalled_in_step_5(self, batch, batch_idx):  # as a scheduler's kill or Ctrl-C would, mid-step
        if self.global_step == 5:
            os.kill(os.getpid(), getattr(signal, sig))
        return step_fn(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", signalled_in_step_5)
    capsys.readouterr()
    # what the process had before: Python's default_int_handler, or SIG_IGN when launched in the background
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert pretrain(method, run) == 128 + getattr(signal, sig)
    monkeypatch.undo()
    assert user_error() == (f"interrupted by {sig} after step 6 of 12; saved checkpoints/last.ckpt and a summary "
                            f"marked interrupted — continue with --resume auto")
    assert final_state(run)["global_step"] == 6  # the step that was running finished, then it saved
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == sig and summary["steps"] == 6
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are restored
    assert pretrain(method, run, "--resume", "auto") == 0
    assert losses(run) == losses(straight[method])
    assert_same_state(final_state(run), final_state(straight[method]))
    assert "interrupted" not in json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """65 JPEGs of 24–40 px, streamed at 16 px (BASE's subset of 64: 4 steps of 16 per epoch)."""
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"), 65, (24, 40), classes=2)


def pretrain_streamed(folder: Path, out: Path, workers: int, *extra: str) -> int:
    return pretrain("mae", out, "--dataset", "imagefolder", "--data-root", str(folder), *extra,
                    sets=("data.storage=stream", "data.image_size=16", f"data.num_workers={workers}"))


def test_streamed_run_stopped_mid_epoch_then_resumed_matches_the_straight_run(jpegs, tmp_path):
    """The streaming loader resumes at its batch like the in-memory one, and its decode-time crops are keyed by
    (seed, epoch, sample): bitwise the straight run, with 2 decoding workers there and none here."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert pretrain_streamed(jpegs, straight, 2) == 0
    assert pretrain_streamed(jpegs, run, 0, "--max-steps", "6") == 0
    assert final_state(run)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert pretrain_streamed(jpegs, run, 0, "--resume", "auto") == 0
    assert [s for s, _ in losses(run)] == list(range(12))
    assert losses(run) == losses(straight)
    assert_same_state(final_state(run), final_state(straight))
