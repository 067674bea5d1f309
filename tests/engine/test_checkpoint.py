"""Atomic checkpoint writes and what a checkpoint records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import byon
from byon import rundir as ckpt_mod
from byon.cli import main
from byon.errors import ByonError
from byon.provenance import git_commit
from byon.rundir import atomic_save, read_checkpoint, remove_stale_temp_files

TINY = ["--method", "mae", "--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16",
        "--no-progress", "--epochs", "1"]


def failing_save_after(monkeypatch: pytest.MonkeyPatch, ok_calls: int) -> None:
    """torch.save inside atomic_save writes half its bytes and then fails, after `ok_calls` good saves."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= ok_calls:
            return real(obj, f, *args, **kwargs)
        import io

        buf = io.BytesIO()
        real(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", save)


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"byon": {}, "state_dict": {"w": torch.ones(3)}}, path)
    failing_save_after(monkeypatch, ok_calls=0)
    with pytest.raises(ByonError, match=f"cannot write checkpoint '{path}': no space left on the device; the "
                                        f"earlier checkpoints are intact"):
        atomic_save({"byon": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_crash_during_a_training_save_keeps_the_previous_checkpoint_loadable(tmp_path, monkeypatch, capsys,
                                                                              user_error):
    run = tmp_path / "run"
    # saves: step 1 (epoch=…-step=1 then last), step 2 (…, last); the 5th write (step 3) dies half-way
    failing_save_after(monkeypatch, ok_calls=4)
    capsys.readouterr()
    assert main(["pretrain", *TINY, "--out", str(run), "--set", "train.ckpt_every_steps=1"]) == 2
    monkeypatch.undo()
    assert user_error() == (f"cannot write checkpoint '{run / 'checkpoints'}/epoch=0000-step=00000003.ckpt': no "
                            f"space left on the device; the earlier checkpoints are intact — free space or fix the "
                            f"folder, then continue with --resume auto")
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == ["epoch=0000-step=00000001.ckpt", "epoch=0000-step=00000002.ckpt", "last.ckpt"]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    # and the run resumes from it to the end
    assert main(["pretrain", *TINY, "--out", str(run), "--set", "train.ckpt_every_steps=1",
                 "--resume", "auto"]) == 0
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"x")
    stale = tmp_path / f".last.ckpt{ckpt_mod.TMP_MARK}123-abcd"
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoint_records_resolved_config_version_and_commit(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--out", str(run), "--set", "mae.mask_ratio=0.5"]) == 0
    meta = read_checkpoint(run / "checkpoints" / "last.ckpt")["byon"]
    assert meta["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert meta["config"]["mae"]["mask_ratio"] == 0.5 and meta["config"]["optim"]["blr"] == 1.5e-4
    assert meta["version"] == byon.__version__
    assert meta["commit"] == git_commit() and meta["commit"] is not None
    assert meta["data_info"]["img_size"] == 28 and meta["skipped_steps"] == 0


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(ByonError, match="cannot be read .* truncated or not a byon checkpoint"):
        read_checkpoint(path)


def test_a_foreign_checkpoint_is_refused(tmp_path):
    path = Path(tmp_path / "foreign.ckpt")
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ByonError, match="is not a byon checkpoint"):
        read_checkpoint(path)


class RunsCode:
    """Unpickling this calls os.mkdir(marker): a stand-in for whatever a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def booby_trapped_run(run: Path, marker: Path) -> Path:
    """A real run whose last.ckpt (the only one) also holds an object whose unpickling would run code."""
    assert main(["pretrain", *TINY, "--max-steps", "1", "--out", str(run)]) == 0
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["byon"]["payload"] = RunsCode(marker)
    torch.save(ckpt, path)
    for p in (run / "checkpoints").glob("epoch=*.ckpt"):
        p.unlink()
    return path


@pytest.mark.parametrize("command", ["eval", "export", "embed", "resume"])
def test_loading_a_checkpoint_never_runs_its_code(tmp_path, capsys, user_error, hashes, command):
    marker = tmp_path / "code-ran"
    path = booby_trapped_run(tmp_path / "run", marker)
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "imgs" / "a.png")
    before = hashes(tmp_path / "run")
    args = {"eval": ["eval", "knn", "--run", str(tmp_path / "run")],
            "export": ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "e.safetensors")],
            "embed": ["embed", "--run", str(tmp_path / "run"), "--images", str(tmp_path / "imgs"),
                      "--out", str(tmp_path / "e.npy")],
            "resume": ["pretrain", *TINY, "--out", str(tmp_path / "run"), "--resume", "auto"]}[command]
    capsys.readouterr()
    assert main(args) == 2
    assert (f"checkpoint '{path}' needs pickled code to load (posix.mkdir), which could run anything on this "
            f"machine; byon checkpoints hold none — if you trust whoever wrote it, pass --trust-checkpoint"
            ) in user_error()
    assert not marker.exists()
    assert hashes(tmp_path / "run") == before


def test_lightnings_own_checkpoint_read_is_weights_only_too(tmp_path):
    from byon.engine.callbacks import AtomicCheckpointIO

    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "x": RunsCode(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ByonError, match="needs pickled code to load"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt", weights_only=False)
    assert not marker.exists()


def test_trust_checkpoint_loads_it_when_asked(tmp_path):
    marker = tmp_path / "code-ran"
    booby_trapped_run(tmp_path / "run", marker)
    try:
        assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "e.safetensors"),
                     "--trust-checkpoint"]) == 0
    finally:
        ckpt_mod.trust_checkpoints(False)
    assert marker.exists() and (tmp_path / "e.safetensors").is_file()
