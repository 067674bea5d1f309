"""End-to-end fine-tuning: timm's layer-wise lr decay on our encoder, the classifier, seeding, a tiny run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.optim import create_optimizer_v2
from torch import nn

from byon.cli import main
from byon.errors import ByonError
from byon.eval.finetune import FinetuneConfig, classifier, finetune, logits, randaugment, seeded
from byon.nn.vit import EncoderShape, ViTEncoder

SHAPE = EncoderShape(img_size=8, in_chans=1, patch_size=4, embed_dim=8, depth=3, num_heads=2, mlp_ratio=2.0)


def test_layer_decay_groups_follow_the_blocks() -> None:
    """timm groups our subclass like its own ViT: stem (0), block i (i + 1, the final norm with the last block),
    head (4); a group's lr scale is decay^(4 − group)."""
    model = classifier(ViTEncoder(SHAPE), 5, "cls", 0.0)
    opt = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["pos_embed"]) not in scale  # fixed sin-cos, not trained
    assert scale[id(named["patch_embed.proj.weight"])] == scale[id(named["cls_token"])] == 0.5**4
    for i in range(3):
        assert scale[id(named[f"blocks.{i}.attn.qkv.weight"])] == 0.5 ** (3 - i)
    assert scale[id(named["norm.weight"])] == 0.5 and scale[id(named["head.weight"])] == 1.0
    assert decay[id(named["cls_token"])] == decay[id(named["head.bias"])] == 0.0
    assert decay[id(named["blocks.0.mlp.fc1.weight"])] == 0.05
    assert len(scale) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_classifier_pools_the_frozen_feature_and_leaves_the_source_alone(pool: str) -> None:
    enc = ViTEncoder(SHAPE).eval()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = classifier(enc, 7, pool, 0.2).eval()
    rates = [0.0, 0.1, 0.2]
    for blk, r in zip(model.blocks, rates):
        assert (blk.drop_path1.drop_prob if r else 0.0) == pytest.approx(r)
        assert isinstance(blk.drop_path1, nn.Identity) == (r == 0)
    assert all(isinstance(b.drop_path1, nn.Identity) for b in enc.blocks) and isinstance(enc.head, nn.Identity)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_encoder(x), pre_logits=True),
                                   enc.features(x)[pool])
        assert logits(model, x).shape == (3, 7)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())


def test_seeded_repeats_draws_and_restores_the_callers_streams() -> None:
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expect = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    with seeded(3, torch.device("cpu")):
        a = (torch.rand(2), random.random(), np.random.rand())
    with seeded(3, torch.device("cpu")):
        b = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    after = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(after[0], expect[0]) and after[1:] == expect[1:]


def test_randaugment_keeps_uint8_rgb_shape() -> None:
    from timm.data.auto_augment import rand_augment_transform

    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ra = rand_augment_transform("rand-m9-n2-mstd0.5", {"translate_const": 7, "img_mean": (128, 128, 128)})
    with seeded(0, torch.device("cpu")):
        y = randaugment(x, ra)
    assert y.dtype == torch.uint8 and y.shape == x.shape and not torch.equal(x, y)


def test_finetune_grayscale_from_the_cli(gray_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "finetune", "--run", str(gray_run), "--epochs", "1", "--subset", "48", "--batch-size", "16",
                 "--blr", "1e-3", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert out[0].startswith("finetune top-1 on synthetic: ")
    assert res["randaugment"] == "skipped: RandAugment needs RGB images, these have 1 channel(s)"
    assert res["steps"] == 3 and res["train_images"] == 48 and res["test_images"] == 500
    assert res["pool"] == "mean" and res["lr"] == pytest.approx(1e-3 * 16 / 256)  # MAE's default feature
    assert 0.0 <= res["top1"] <= res["top5"] <= 100.0 and len(res["history"]) == 1
    path = gray_run / "eval" / "finetune-synthetic-batch_size=16,blr=0.001,epochs=1,subset=48.json"
    assert json.loads(path.read_text()) == res  # named after the settings that differ from the defaults


def test_finetune_rgb_applies_randaugment_and_repeats_exactly(rgb_run: Path) -> None:
    cfg = FinetuneConfig(epochs=2, batch_size=16, subset=32, warmup_epochs=0.5, eval_batch_size=256)
    a = finetune(rgb_run, cfg=cfg)
    b = finetune(rgb_run, cfg=cfg)
    assert a["randaugment"] == cfg.randaug and a["pool"] == "cls"
    assert a["steps"] == 4 and a["history"] == b["history"] and a["top1"] == b["top1"]
    assert a["history"][0]["lr"] > a["history"][1]["lr"]  # cosine after the warm-up


def test_finetune_rejects_bad_settings(gray_run: Path) -> None:
    with pytest.raises(ByonError, match="even batch size"):
        finetune(gray_run, cfg=FinetuneConfig(batch_size=15))
    with pytest.raises(ByonError, match="larger than the 32 training images"):
        finetune(gray_run, cfg=FinetuneConfig(batch_size=64, subset=32))
    with pytest.raises(ByonError, match="did you mean 'mean'"):
        finetune(gray_run, cfg=FinetuneConfig(pool="meen"))


def test_finetune_with_a_readout_setting_tunes_that_truncation(ddae_run: Path) -> None:
    cfg = FinetuneConfig(epochs=1, batch_size=16, subset=32, eval_batch_size=256)
    res = finetune(ddae_run, cfg=cfg, readout={"feature_block": 3})  # vit-test: blocks 1-2 the encoder half
    assert res["readout"] == {"feature_block": 3} and res["encoder_blocks"] == 3  # a cut in the decoder half
    path = ddae_run / "eval" / "finetune-synthetic-feature_block=3-batch_size=16,epochs=1,subset=32.json"
    assert json.loads(path.read_text()) == res
    assert not list((ddae_run / "eval").glob("finetune-synthetic-b*.json"))  # the default read-out's is another
