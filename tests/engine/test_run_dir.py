"""One run per run directory: a non-empty --out is refused unless resumed or overwritten, a training run locks
its directory, and a stale lock of a dead process does not block."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byon.cli import main
from byon.engine import runlock
from byon.engine.runlock import LOCK_NAME, RunLock
from byon.rundir import read_checkpoint, torch_threads

TINY = ["--method", "mae", "--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16",
        "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["pretrain", *TINY, "--out", str(run)]) == 0
    (run / "eval").mkdir()
    (run / "eval" / "knn-synthetic.json").write_text('{"top1": 50.0}\n')
    return run


def copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


def test_a_finished_run_is_not_overwritten_by_a_fresh_one(finished, tmp_path, user_error, hashes):
    run = copy(finished, tmp_path / "run")
    before = hashes(run)
    assert main(["pretrain", *TINY, "--out", str(run)]) == 2
    assert user_error() == (f"run directory '{run}' is not empty (checkpoints, config.yaml, eval, logs, ...); "
                            f"continue that run with --resume auto, give a new --out, or pass --overwrite to delete "
                            f"its contents first")
    assert hashes(run) == before


def test_overwrite_clears_the_directory_first(finished, tmp_path):
    run = copy(finished, tmp_path / "run")
    assert main(["pretrain", *TINY, "--max-steps", "1", "--out", str(run), "--overwrite"]) == 0
    assert not (run / "eval").exists()  # the old run's results do not sit beside the new weights
    assert json.loads((run / "summary.json").read_text())["steps"] == 1
    assert {read_checkpoint(p)["global_step"] for p in (run / "checkpoints").iterdir()} == {1}


def test_resume_auto_continues_a_finished_run_and_starts_an_empty_one(finished, tmp_path):
    run = copy(finished, tmp_path / "run")
    assert main(["pretrain", *TINY, "--out", str(run), "--resume", "auto"]) == 0  # `make demo` run twice
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert main(["pretrain", *TINY, "--epochs", "2", "--out", str(run), "--resume", "auto"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 8
    assert main(["pretrain", *TINY, "--max-steps", "1", "--out", str(tmp_path / "new"), "--resume", "auto"]) == 0


@pytest.mark.parametrize("extra", [["--resume", "auto"], ["--overwrite"]])
def test_a_run_directory_in_use_is_refused(finished, tmp_path, user_error, hashes, extra):
    run = copy(finished, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from byon.engine.runlock import RunLock; "
        "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()"), str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = hashes(run)
        assert main(["pretrain", *TINY, "--out", str(run), *extra]) == 2
        assert user_error() == (f"run directory '{run}' is in use by a run that is still training (pid {holder.pid} "
                                f"on {__import__('socket').gethostname()}); wait for it to end or give another --out")
        assert hashes(run) == before
    finally:
        holder.kill()  # the kernel drops its lock with it: a dead run leaves no stale lock
        holder.wait()
    assert main(["pretrain", *TINY, "--out", str(run), *extra]) == 0


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("pid 999999 on some-host\n")  # no process holds its flock
    assert main(["pretrain", *TINY, "--max-steps", "1", "--out", str(run)]) == 0


def test_the_lock_is_held_while_training_and_released_after(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []
    real = runlock.check_out

    def check_out(out, resume, overwrite):  # called a second time under the run's own lock
        if (out / LOCK_NAME).exists():
            other = RunLock(out)
            with pytest.raises(Exception, match="in use by a run that is still training"):
                other.acquire()
            seen.append(True)
        real(out, resume, overwrite)

    monkeypatch.setattr("byon.engine.run.check_out", check_out)
    assert main(["pretrain", *TINY, "--max-steps", "1", "--out", str(run)]) == 0
    assert seen == [True]
    lock = RunLock(run)
    lock.acquire()  # released at the end of the run
    lock.release()


def test_out_that_is_a_file(tmp_path, user_error):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert main(["pretrain", *TINY, "--out", str(path)]) == 2
    assert user_error() == f"--out '{path}' is a file, not a directory; give a new directory for the run"
    assert path.read_text() == "mine"


def test_out_on_a_read_only_file_system(tmp_path, user_error, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(runlock.Path, "mkdir", read_only)
    assert main(["pretrain", *TINY, "--out", str(tmp_path / "ro" / "run")]) == 2
    assert user_error() == (f"cannot create run directory '{tmp_path / 'ro' / 'run'}' (Read-only file system); give an "
                            f"--out on a writable file system")


def test_overwrite_and_resume_together(tmp_path, user_error):
    assert main(["pretrain", *TINY, "--out", str(tmp_path / "run"), "--overwrite", "--resume", "auto"]) == 2
    assert user_error() == "--overwrite clears the run directory and --resume continues it; give one of them"
    assert not (tmp_path / "run").exists()


def test_torch_threads_sets_the_count_for_the_block_and_gives_it_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(None):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("given back on errors too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
