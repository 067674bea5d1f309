"""Bad input gets one clear `byon: error:` line (exit code 2), and nothing half-written is left behind."""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import byon.data.fashion_mnist as fashion_mnist
from byon.cli import main
from byon.data import load_dataset
from byon.methods import METHODS

TINY = ["--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress", "--epochs", "1"]
SYNTH = ["--method", "mae", "--dataset", "synthetic", *TINY]


@pytest.fixture(autouse=True)
def no_installed_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYON_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", [])


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("byon: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("byon: error: ")


def pretrain_fails(tmp_path: Path, capsys: pytest.CaptureFixture, *args: str) -> str:
    """Runs `byon pretrain ARGS --out tmp/run`, expects exit 2 and no run directory; returns the message."""
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["pretrain", *args, "--out", str(out)]) == 2
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    return error_line(capsys)


def write_fmnist(folder: Path, n: int = 100) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, magic, arr in (("train-images-idx3-ubyte", 2051, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                             ("train-labels-idx1-ubyte", 2049, rng.integers(0, 10, n, dtype=np.uint8))):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + arr.tobytes()))


def write_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))


# --- dataset files ----------------------------------------------------------------------------------
def test_missing_dataset_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "fashion-mnist", "--data-root",
                         str(tmp_path / "empty"), *TINY)
    assert msg.startswith("Fashion-MNIST train split not found (looked for train-images-idx3-ubyte[.gz] and "
                          f"train-labels-idx1-ubyte[.gz] in {tmp_path / 'empty'}")
    assert "apt-get install dataset-fashion-mnist" in msg


def test_truncated_idx_file(tmp_path, capsys):
    write_fmnist(tmp_path / "fm")
    p = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "fashion-mnist", "--data-root",
                         str(tmp_path / "fm"), *TINY)
    assert msg.startswith(f"Fashion-MNIST file '{p}' is truncated or corrupt: 78300 data bytes where the header "
                          f"[100, 28, 28] needs 78400; re-download it")


def test_corrupt_gzip_idx_file(tmp_path, capsys):
    write_fmnist(tmp_path / "fm")
    p = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:20])
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "fashion-mnist", "--data-root",
                         str(tmp_path / "fm"), *TINY)
    assert msg.startswith(f"Fashion-MNIST file '{p}' is truncated or corrupt: damaged gzip stream")


def test_truncated_pickle_file(tmp_path, capsys):
    write_cifar10(tmp_path / "c10" / "cifar-10-batches-py")
    p = tmp_path / "c10" / "cifar-10-batches-py" / "data_batch_1"
    p.write_bytes(p.read_bytes()[:200])
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "cifar10", "--data-root",
                         str(tmp_path / "c10"), "--model", "vit-test", "--no-progress")
    assert msg == (f"CIFAR-10 file '{p}' is truncated or corrupt (pickle data was truncated); re-download the python "
                   f"version archive from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it again")


def test_image_folder_without_images(tmp_path, capsys):
    (tmp_path / "imgs" / "cats").mkdir(parents=True)
    (tmp_path / "imgs" / "cats" / "notes.txt").write_text("no images here")
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "imagefolder", "--data-root",
                         str(tmp_path / "imgs"), *TINY)
    assert msg.startswith(f"image folder '{tmp_path / 'imgs'}' holds no images (.bmp, .gif, .jpeg")


def image_folder_with_a_broken_file(root: Path, n: int = 20) -> Path:
    root.mkdir()
    for i in range(n):
        Image.fromarray(np.full((16, 16), i * 10, dtype=np.uint8)).save(root / f"{i:02d}.png")
    (root / "zz_broken.png").write_bytes(b"this is not a png")
    return root / "zz_broken.png"


def test_image_folder_with_an_unreadable_file_fails_by_default(tmp_path, capsys):
    broken = image_folder_with_a_broken_file(tmp_path / "imgs")
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "imagefolder", "--data-root",
                         str(tmp_path / "imgs"), "--model", "vit-test", "--batch-size", "8", "--no-progress")
    assert msg == (f"cannot read image '{broken}' (cannot identify image file '{broken}'); remove or replace it, or "
                   f"skip unreadable files with on_bad_file='skip' (--set data.on_bad_file=skip)")


def test_image_folder_with_an_unreadable_file_skips_and_reports_when_asked(tmp_path, caplog):
    broken = image_folder_with_a_broken_file(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING):
        data = load_dataset("imagefolder", "train", root=tmp_path / "imgs", on_bad_file="skip")
    assert len(data) == 20
    assert f"skipped 1 unreadable image file(s) in '{tmp_path / 'imgs'}' (first: '{broken}')" in caplog.text


def test_unknown_on_bad_file_value(tmp_path, capsys):
    image_folder_with_a_broken_file(tmp_path / "imgs")
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "imagefolder", "--data-root",
                         str(tmp_path / "imgs"), *TINY, "--set", "data.on_bad_file=skp")
    assert msg == "unknown on_bad_file value 'skp' (did you mean 'skip'?); valid: fail, skip"


# --- model / method settings ------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--set", "model.in_chans=3"], "the model expects 3 channels but the dataset has 1; drop model.in_chans or "
                                    "set it to 1"),
    (["--set", "model.patch_size=5"], "image size 28 is not divisible by patch size 5; choose a patch size that "
                                      "divides it (e.g. set model.patch_size=4)"),
    (["--set", "mae.mask_ratio=1.0"], "mae.mask_ratio must be in [0, 1), got 1.0; e.g. 0.75 masks three patches "
                                      "in four"),
    (["--set", "mae.mask_ratio=-0.1"], "mae.mask_ratio must be in [0, 1), got -0.1; e.g. 0.75 masks three "
                                       "patches in four"),
    (["--subset", "0"], "empty subset (subset=0); give a positive number of images, or no subset to use all 2000 "
                        "synthetic train images"),
    (["--batch-size", "128"], "batch size 128 is larger than the 64 images the dataset has (synthetic, 64 images); "
                              "use a batch size of at most 64 (e.g. --set train.batch_size=64)"),
    (["--method", "maee"], "unknown method 'maee' (did you mean 'mae'?); valid: " + ", ".join(sorted(METHODS))),
    (["--model", "vit-tinny"], "unknown model preset 'vit-tinny' (did you mean 'vit-tiny'?); valid: vit-base, "
                               "vit-micro, vit-small, vit-test, vit-tiny"),
    (["--dataset", "cifar-10"], "unknown dataset 'cifar-10' (did you mean 'cifar10'?); valid: cifar10, cifar100, "
                                "fashion-mnist, imagefolder, shards, synthetic, synthetic-rgb"),
    (["--set", "train.epoch=3"], "unknown config key 'train.epoch' (did you mean 'epochs'?); valid keys of train: "
                                 "epochs, batch_size"),
    (["--set", "trian.epochs=3"], "unknown config section 'trian' (did you mean 'train'?); valid sections: method, "
                                  "data, model, optim, train, mae"),
    (["--set", "train.max_bad_steps=0"], "train.max_bad_steps must be at least 1, got 0"),
    (["--epochs", "-1"], "train.epochs must be at least 0, got -1; 0 trains nothing (the untrained reference run)"),
    (["--max-steps", "-1"], "train.max_steps must be at least 1, got -1; or none for no step limit"),
    (["--batch-size", "0"], "train.batch_size must be at least 1, got 0"),
    (["--seed", "-3"], "train.seed must be in [0, 4294967295], got -3"),
    (["--set", "data.crop_scale=[2,1]"], "data.crop_scale[0] must be in (0, 1], got 2; the crop keeps this fraction"),
    (["--set", "data.crop_scale=[0.8,0.5]"], "data.crop_scale[1] must be in [0.8, 1], got 0.5"),
    (["--set", "data.crop_ratio=[0,1]"], "data.crop_ratio[0] must be above 0, got 0"),
    (["--set", "optim.lr=nan"], "optim.lr: expected a finite number, got 'nan'"),
    (["--set", "optim.lr=.inf"], "optim.lr: expected a finite number, got inf"),
    (["--set", "optim.lr=-0.001"], "optim.lr must be above 0, got -0.001; e.g. optim.lr=1e-3, or drop it to scale "
                                   "optim.blr"),
    (["--set", "optim.blr=0"], "optim.blr must be above 0, got 0"),
    (["--set", "optim.betas=[0.9,1.5]"], "optim.betas[1] must be in [0, 1), got 1.5"),
    (["--set", "optim.weight_decay=-1"], "optim.weight_decay must be at least 0, got -1"),
    (["--set", "optim.grad_clip=0"], "optim.grad_clip must be above 0, got 0; or none for no clipping"),
    (["--set", "model.drop_path=1.5"], "model.drop_path must be in [0, 1), got 1.5"),
    (["--set", "model.depth=0"], "model.depth must be at least 1, got 0"),
    (["--set", "train.log_every_n_steps=0"], "train.log_every_n_steps must be at least 1, got 0"),
    (["--set", "mae.mask_ratio=nan"], "mae.mask_ratio: expected a finite number"),
    (["--accelerator", "tpux"], "the trainer settings (train.accelerator/devices/strategy/precision) are invalid: "
                                "You selected an invalid accelerator name: `accelerator='tpux'`."),
])
def test_bad_settings(tmp_path, capsys, args, message):
    # later flags win over SYNTH's
    msg = pretrain_fails(tmp_path, capsys, *SYNTH, *args)
    assert msg.startswith(message), msg


def test_epochs_help_names_the_untrained_reference(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "0: no training at all, the untrained random-init reference" in " ".join(capsys.readouterr().out.split())


def test_an_explicit_data_root_is_used_alone_and_the_run_records_the_folder_read(tmp_path, capsys, monkeypatch):
    write_fmnist(tmp_path / "env")
    monkeypatch.setenv("BYON_DATA", str(tmp_path / "env"))
    msg = pretrain_fails(tmp_path, capsys, "--method", "mae", "--dataset", "fashion-mnist", "--data-root",
                         str(tmp_path / "typo"), *TINY)
    assert msg.startswith(f"Fashion-MNIST train split not found (looked for train-images-idx3-ubyte[.gz] and "
                          f"train-labels-idx1-ubyte[.gz] in {tmp_path / 'typo'}, {tmp_path / 'typo'}/fashion-mnist")
    assert str(tmp_path / "env") not in msg
    run = tmp_path / "env-run"
    assert main(["pretrain", "--method", "mae", "--dataset", "fashion-mnist", *TINY, "--max-steps", "1",
                 "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["data_dirs"] == {"train": str(tmp_path / "env")}


# --- checkpoints ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mae_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mae") / "run"
    assert main(["pretrain", *SYNTH, "--max-steps", "1", "--out", str(run)]) == 0
    return run


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("features", "eval", "logs"))
    return dst


@pytest.mark.parametrize("command", ["eval", "export"])
def test_checkpoint_of_another_method_in_the_run(mae_run, tmp_path, capsys, command):
    run = copy_run(mae_run, tmp_path / "byon-run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"] = "byon"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    args = ["eval", "knn", "--run", str(run)] if command == "eval" else \
        ["export", "--run", str(run), "--out", str(tmp_path / "enc.safetensors")]
    capsys.readouterr()
    assert main(args) == 2
    assert error_line(capsys) == (f"checkpoint '{run / 'checkpoints' / 'last.ckpt'}' was trained with method 'mae' "
                                  f"but the run's config.yaml says 'byon'; the checkpoint belongs to another run")
    assert not (run / "features").exists() and not (tmp_path / "enc.safetensors").exists()


def test_checkpoint_whose_weights_are_not_its_methods(mae_run, tmp_path, capsys):
    run = copy_run(mae_run, tmp_path / "run")
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["byon"]["config"]["method"] = "byon"
    ckpt["byon"]["config"].pop("mae")
    torch.save(ckpt, path)
    (run / "config.yaml").unlink()
    capsys.readouterr()
    assert main(["eval", "knn", "--run", str(run)]) == 2
    msg = error_line(capsys)
    assert msg.startswith(f"checkpoint '{path}' does not hold the weights of a 'byon' model (Missing key(s)")
    assert msg.endswith("it belongs to another method or library version")


@pytest.mark.parametrize("command", ["eval", "export", "resume"])
def test_truncated_checkpoint(mae_run, tmp_path, capsys, command):
    run = copy_run(mae_run, tmp_path / "run")
    path = run / "checkpoints" / "last.ckpt"
    path.write_bytes(path.read_bytes()[:1000])
    for extra in (run / "checkpoints").glob("epoch=*.ckpt"):
        extra.unlink()
    args = {"eval": ["eval", "knn", "--run", str(run)],
            "export": ["export", "--run", str(run), "--out", str(tmp_path / "enc.safetensors")],
            "resume": ["pretrain", *SYNTH, "--out", str(run), "--resume", str(path)]}[command]
    capsys.readouterr()
    assert main(args) == 2
    assert error_line(capsys) == (f"checkpoint '{path}' cannot be read (RuntimeError); it is truncated or not a "
                                  f"byon checkpoint — use an earlier one from the same checkpoints/ folder")
    assert not (tmp_path / "enc.safetensors").exists() and not (run / "features").exists()


def test_resume_with_another_method(mae_run, tmp_path, capsys):
    run = copy_run(mae_run, tmp_path / "run")
    capsys.readouterr()
    assert main(["pretrain", "--method", "byon", "--dataset", "synthetic", *TINY, "--out", str(run),
                 "--resume", "auto"]) == 2
    assert error_line(capsys) == ("--resume: checkpoint was trained with method 'mae', not 'byon'; use --method "
                                  "mae or a new --out")


def test_missing_run_directory(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert error_line(capsys) == (f"run directory '{tmp_path / 'nope'}' does not exist; pass the --out of a "
                                  f"`byon pretrain` run")


def test_bad_settings_on_resume_leave_the_run_untouched(mae_run, tmp_path, capsys, hashes):
    run = copy_run(mae_run, tmp_path / "run")
    before = hashes(run)
    capsys.readouterr()
    assert main(["pretrain", *SYNTH, "--out", str(run), "--resume", "auto", "--set", "optim.lr=-1"]) == 2
    assert error_line(capsys).startswith("optim.lr must be above 0, got -1")
    assert hashes(run) == before


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("two") / "run"
    assert main(["pretrain", *SYNTH, "--epochs", "2", "--out", str(run)]) == 0
    return run


def test_a_damaged_last_ckpt_is_replaced_by_resume_and_eval_can_pick_a_checkpoint(two_epoch_run, tmp_path, capsys,
                                                                                   hashes):
    run = copy_run(two_epoch_run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = hashes(run)
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert error_line(capsys) == (f"checkpoint '{last}' cannot be read (RuntimeError); it is truncated or not a byon "
                                  f"checkpoint — pick another with --checkpoint (this run also has: epoch-1, epoch-0)")
    assert main(["eval", "knn", "--run", str(run), "--checkpoint", "epoch-7"]) == 2
    assert error_line(capsys) == (f"--checkpoint epoch-7: no such checkpoint in '{run / 'checkpoints'}'; give last, "
                                  f"epoch-N or a .ckpt path (this run has: last, epoch-1, epoch-0)")
    assert hashes(run) == before
    for choice in ("epoch-1", str(run / "checkpoints" / "epoch=0001.ckpt")):
        assert main(["export", "--run", str(run), "--out", str(tmp_path / "e.safetensors"), "--checkpoint",
                     choice]) == 0
        assert json.loads((tmp_path / "e.json").read_text())["checkpoint"] == "epoch=0001.ckpt"
    assert main(["eval", "knn", "--run", str(run), "--checkpoint", "epoch-0"]) == 0
    assert (run / "eval" / "knn-synthetic-checkpoint=epoch-0.json").is_file()
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    assert main(["embed", "--run", str(run), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "f.npy"),
                 "--checkpoint", "epoch-1"]) == 0
    assert np.load(tmp_path / "f.npy").shape[0] == 1

    # --resume auto skips the damaged file and, with nothing left to train, writes a good last.ckpt over it
    assert main(["pretrain", *SYNTH, "--epochs", "2", "--out", str(run), "--resume", "auto"]) == 0
    good = torch.load(run / "checkpoints" / "epoch=0001.ckpt", weights_only=True)["state_dict"]
    now = torch.load(last, weights_only=True)["state_dict"]
    assert now.keys() == good.keys() and all(torch.equal(now[k], good[k]) for k in good)
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "e2.safetensors")]) == 0


def test_a_yaml_syntax_error_names_its_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: mae\ndata:\n  dataset: synthetic\n   subset: 3\n")
    assert main(["pretrain", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == (f"config file '{bad}' is not valid YAML at line 4, column 10: mapping values are "
                                  f"not allowed here; fix that line (indent with spaces, write key: value)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", range(4))
def test_checkpoints_of_random_bytes_are_one_line_with_nothing_after_it(mae_run, tmp_path, capsys, hashes, seed):
    run = copy_run(mae_run, tmp_path / "run")
    rng = np.random.default_rng(seed)
    for p in (run / "checkpoints").glob("*.ckpt"):  # a pickle protocol header, then noise
        p.write_bytes(b"\x80\x02" + rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
    before = hashes(run)
    capsys.readouterr()
    assert main(["pretrain", *SYNTH, "--out", str(run), "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "SystemError" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("byon: error: --resume auto: none of the ")
    assert len(err.strip().splitlines()) <= 3  # a warning per skipped newer file, then the error
    assert hashes(run) == before


def test_export_to_an_unwritable_place(mae_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "enc.safetensors"
    assert main(["export", "--run", str(mae_run), "--out", str(out)]) == 2
    assert error_line(capsys) == (f"cannot write file '{out}': '{tmp_path / 'notes.txt'}' is a file, not a folder; "
                                  f"nothing earlier was overwritten — choose a writable place with free space")


def test_ctrl_c_outside_training_promises_no_checkpoint(tmp_path, capsys, monkeypatch):
    import byon.engine.run as run_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "train", interrupted)  # e.g. while the dataset loads
    assert main(["pretrain", *SYNTH, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err == "byon: interrupted before anything was saved; checkpoints from earlier are kept\n"
