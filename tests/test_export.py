"""Export to timm (safetensors + JSON), `byon embed`, and `byon.load_encoder`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

import byon
from byon.cli import main
from byon.errors import ByonError
from byon.export import read_image_folder
from byon.rundir import load_run

TINY = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress",
        "--epochs", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {"byon": root / "byon", "mae": root / "mae"}
    assert main(["pretrain", "--method", "byon", *TINY, "--max-steps", "2", "--out", str(out["byon"])]) == 0
    assert main(["pretrain", "--method", "mae", *TINY, "--max-steps", "1", "--out", str(out["mae"])]) == 0
    return out


def images(n: int = 4, size: int = 28, chans: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, chans, size, size, generator=g)


def test_export_files_share_the_usual_permissions(runs, tmp_path):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run", str(runs["mae"]), "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == out.with_suffix(".json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("ema", [False, True])
def test_export_loads_strictly_into_timm_and_gives_the_same_features(runs, tmp_path, ema):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run", str(runs["byon"]), "--out", str(out), *(["--ema"] if ema else [])]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["method"] == "byon" and meta["ema"] is ema and meta["source_run"] == str(runs["byon"].resolve())
    assert (meta["img_size"], meta["patch_size"], meta["in_chans"], meta["embed_dim"], meta["depth"],
            meta["num_heads"], meta["mlp_ratio"]) == (28, 4, 1, 32, 2, 2, 2.0)
    assert meta["class_token"] is True and meta["global_pool"] == "token" and len(meta["input"]["mean"]) == 1

    model = VisionTransformer(**meta["timm_kwargs"], num_classes=0).eval()
    model.load_state_dict(load_file(str(out)), strict=True)
    ours = byon.load_encoder(str(runs["byon"]), ema=ema)
    x = images()
    with torch.no_grad():
        f = ours.features(x)
        assert torch.allclose(model(x), f["cls"], atol=1e-6)
        assert torch.allclose(model.forward_features(x)[:, 1:].mean(1), f["mean"], atol=1e-6)
    # timm's factory with the same kwargs builds the same thing
    made = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **meta["timm_kwargs"])
    made.load_state_dict(load_file(str(out)), strict=True)


def test_ema_export_is_the_target_encoder_not_the_online_one(runs, tmp_path):
    _, method = load_run(runs["byon"])
    main(["export", "--run", str(runs["byon"]), "--out", str(tmp_path / "on.safetensors")])
    main(["export", "--run", str(runs["byon"]), "--out", str(tmp_path / "ema.safetensors"), "--ema"])
    online, target = load_file(str(tmp_path / "on.safetensors")), load_file(str(tmp_path / "ema.safetensors"))
    for k, v in method.target_encoder.state_dict().items():
        assert torch.equal(target[k], v), k
    assert not torch.equal(online["blocks.0.attn.qkv.weight"], target["blocks.0.attn.qkv.weight"])


def test_ema_export_of_a_method_without_ema_is_an_error(runs, tmp_path, capsys):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run", str(runs["mae"]), "--out", str(out), "--ema"]) == 2
    assert ("byon: error: the 'MAE' method keeps no EMA (target) encoder beside its online one; drop --ema"
            in capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ByonError, match="no EMA"):
        byon.load_encoder(str(runs["mae"]), ema=True)


def test_load_encoder_is_the_runs_trained_encoder(runs):
    enc = byon.load_encoder(str(runs["mae"]))
    _, method = load_run(runs["mae"])
    assert isinstance(enc, VisionTransformer) and not enc.training
    for k, v in method.encoder.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v), k
    assert enc.data_info.img_size == 28


def write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / "b.jpg")  # RGB, other size
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "sub" / "c.png")


@pytest.mark.parametrize("feature", ["cls", "mean"])
def test_embed_a_folder(runs, tmp_path, feature, capsys):
    folder = tmp_path / "imgs"
    write_folder(folder)
    out = tmp_path / "emb.npy"
    assert main(["embed", "--run", str(runs["mae"]), "--images", str(folder), "--out", str(out),
                 "--feature", feature]) == 0
    assert "wrote 3 embeddings" in capsys.readouterr().out
    emb = np.load(out)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    assert out.with_suffix(".txt").read_text().splitlines() == ["a.png", "b.jpg", "sub/c.png"]
    enc = byon.load_encoder(str(runs["mae"]))
    x, _ = read_image_folder(folder, 28, 1)
    m = torch.tensor(enc.data_info.mean).view(1, -1, 1, 1)
    s = torch.tensor(enc.data_info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        want = enc.features((x.float() / 255 - m) / s)[feature]
    assert np.allclose(emb, want.numpy(), atol=1e-5)


def test_embed_skips_unreadable_files_when_asked(runs, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_folder(folder)
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--run", str(runs["mae"]), "--images", str(folder), "--out", str(out)]) == 2
    assert "cannot read image" in capsys.readouterr().err and not out.exists()
    assert main(["embed", "--run", str(runs["mae"]), "--images", str(folder), "--out", str(out),
                 "--on-bad-file", "skip"]) == 0
    assert "broken.png" not in out.with_suffix(".txt").read_text() and np.load(out).shape == (3, 32)


def test_rgb_to_gray_matches_pil(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    x, _ = read_image_folder(tmp_path, 28, 1)
    assert np.array_equal(x[0, 0].numpy(), np.asarray(Image.fromarray(rgb).convert("L")))


def test_encoder_online_exports_the_context_encoder_of_a_method_whose_default_is_the_target(tmp_path, capsys):
    run = tmp_path / "ijepa"
    assert main(["pretrain", "--method", "ijepa", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    _, method = load_run(run)
    for which, want in ((None, method.target_encoder), ("ema", method.target_encoder), ("online", method.encoder)):
        out = tmp_path / f"{which}.safetensors"
        assert main(["export", "--run", str(run), "--out", str(out), *(["--encoder", which] if which else [])]) == 0
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["encoder"] == (which or "default") and meta["ema"] is (which == "ema")
        got = load_file(str(out))
        assert all(torch.equal(got[k], v) for k, v in want.state_dict().items())
    assert not torch.equal(load_file(str(tmp_path / "online.safetensors"))["blocks.0.attn.qkv.weight"],
                           load_file(str(tmp_path / "ema.safetensors"))["blocks.0.attn.qkv.weight"])
    enc = byon.load_encoder(str(run), encoder="online")
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in method.encoder.state_dict().items())
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x.safetensors"), "--ema",
                 "--encoder", "online"]) == 2
    assert "--ema and --encoder online contradict each other" in capsys.readouterr().err


def test_the_cli_offers_the_encoders_export_knows():
    from byon import cli, export

    assert cli.ENCODERS == export.ENCODERS


def test_a_cut_in_the_dit_decoder_half_loads_but_does_not_export(tmp_path, capsys):
    run = tmp_path / "ddae"
    assert main(["pretrain", "--method", "ddae", *TINY, "--max-steps", "1", "--set", "ddae.feature_block=3",
                 "--out", str(run)]) == 0
    enc = byon.load_encoder(str(run))  # vit-test: blocks 1-2 the encoder half, 3 the decoder's first
    assert len(enc.blocks) == 3 and enc.blocks[2].mlp.act.approximate == "tanh"
    out = tmp_path / "ddae.safetensors"
    capsys.readouterr()  # the pretraining's own output; the export's error is what is checked
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut after block 3, in the DiT's decoder half" in err[0]
    assert not out.exists() and not out.with_suffix(".json").exists()
