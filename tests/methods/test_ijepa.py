import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from byon.corruption.multiblock import MultiBlockMaskCollator, gather_blocks
from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.ijepa import IJEPA
from byon.nn.ema import ema_update

from .common import CONFIGS, INFO, TINY, check_step, make_method, pretrain_knn, rand_batch, step_ctx


def make(seed: int = 0, **ijepa) -> IJEPA:
    return make_method("ijepa", seed, **ijepa).train()


def test_registered_recipe_and_config_file():
    assert METHODS["ijepa"] is IJEPA and IJEPA.default_feature == "mean"
    cfg = load_config(CONFIGS / "ijepa" / "paper.yaml", TINY)
    o = cfg.optim
    assert (o.weight_decay, o.weight_decay_end, o.betas, o.blr) == (0.04, 0.4, (0.9, 0.999), 1.25e-4)
    assert cfg.method_cfg.truncate == "random"
    bench = load_config(None, {"method": "ijepa"})  # the bench path: recipe only
    assert bench.optim.weight_decay_end == 0.4
    # the protocol's augmentation (crop 0.6–1 + flip) in the recipe and the config; the official crop is a row
    assert "data" not in IJEPA.recipe
    for c in (cfg, bench):
        assert c.data.crop_scale == (0.6, 1.0) and c.data.hflip is True
    official = load_config(CONFIGS / "ijepa" / "official_crop.yaml", TINY)
    assert official.data.crop_scale == (0.3, 1.0) and official.data.hflip is False
    assert official.method == "ijepa" and official.optim == cfg.optim and official.method_cfg == cfg.method_cfg


def test_encoders_have_no_cls_and_load_into_timm():
    m = make()
    assert m.encoder.cls_token is None and m.encoder.pos_embed.shape == (1, 49, 32)
    assert m.eval_encoder() is m.target_encoder
    s = m.shape
    timm_vit = VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=0, embed_dim=s.embed_dim,
                                 depth=s.depth, num_heads=s.num_heads, mlp_ratio=s.mlp_ratio, class_token=False,
                                 global_pool="avg", fc_norm=False).eval()
    timm_vit.load_state_dict(m.target_encoder.state_dict(), strict=True)
    x = rand_batch()["image"]
    feats = m.eval().features(x)
    torch.testing.assert_close(timm_vit(x), feats["mean"])
    torch.testing.assert_close(feats["cls"], feats["mean"])
    assert make(eval_encoder="context").eval_encoder() is not None


def test_predictor_outputs_only_the_target_blocks_each_predicted_separately():
    m = make().eval()
    B = 2
    masks = MultiBlockMaskCollator(7, min_keep=4).sample(B, torch.Generator().manual_seed(0))
    z = torch.randn(B, masks.context.shape[1], 32)
    out = m.predictor(z, masks.context, masks.targets)
    assert out.shape == (B, 4, masks.targets.shape[2], 32)
    # another block's positions do not reach block 0: blocks never attend to each other
    other = masks.targets.clone()
    other[:, 1:] = (other[:, 1:] + 7) % 49
    torch.testing.assert_close(m.predictor(z, masks.context, other)[:, 0], out[:, 0])
    # one output per target position: permuting a block's positions permutes its outputs
    perm = torch.randperm(masks.targets.shape[2])
    out_p = m.predictor(z, masks.context, masks.targets[:, :, perm])
    torch.testing.assert_close(out_p, out[:, :, perm])


def test_loss_is_smooth_l1_to_layer_normed_target_features_at_the_targets():
    m = make()
    b = rand_batch()
    seen = {}
    orig = m.predictor.forward

    def spy(*args, **kw):
        seen["pred"] = orig(*args, **kw)
        return seen["pred"]

    m.predictor.forward = spy
    out = m(b, step_ctx())
    masks = m.masks.sample(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = F.layer_norm(m.target_encoder.forward_encoder(b["image"]), (32,))
    target = gather_blocks(h, masks.targets)
    torch.testing.assert_close(out["loss"], F.smooth_l1_loss(seen["pred"], target))
    assert out["context_keep"] == masks.context.shape[1] / 49
    torch.testing.assert_close(out["context_drawn"], masks.context_mask.float().sum(1).mean() / 49)
    assert out["context_drawn"] >= out["context_keep"]
    l2 = make(loss="l2")
    l2.predictor.forward = lambda *a, **k: seen["pred"]
    torch.testing.assert_close(l2(b, step_ctx())["loss"], F.mse_loss(seen["pred"], target))


def test_context_encoder_sees_only_context_tokens():
    m = make()
    b = rand_batch()
    masks = m.masks.sample(4, torch.Generator().manual_seed(0))
    kept = torch.zeros(4, 49, dtype=torch.bool).scatter(1, masks.context, True)
    assert 0 < masks.context.shape[1] < 49
    # overwrite every patch outside the kept context: the context encoder's output is unchanged
    x = b["image"].clone()
    x[(~kept).view(4, 1, 7, 7).repeat_interleave(4, 2).repeat_interleave(4, 3)] = 10.0
    torch.testing.assert_close(m.encode_context(x, masks), m.encode_context(b["image"], masks))


def test_ema_is_the_encoder_only_with_linear_momentum_0996_to_1():
    m = make()
    assert [(o, t) for o, t in m.ema_pairs()] == [(m.encoder, m.target_encoder)]
    assert m.ema_momentum(0, 1) == pytest.approx(0.996)
    assert m.ema_momentum(1, 2) == pytest.approx(0.998)
    assert m.ema_momentum(1, 1) == pytest.approx(1.0)
    assert not any(p.requires_grad for p in m.target_encoder.parameters())


def test_engine_applies_the_cosine_weight_decay_schedule():
    from byon.engine.module import PretrainModule

    cfg = load_config(CONFIGS / "ijepa" / "paper.yaml", TINY, {"train": {"epochs": 2}})
    m = make()
    module = PretrainModule(cfg, m, INFO, loader=range(5))  # 5 steps per epoch → 10 steps in all
    module.base_lr = lambda: 1e-3  # no Trainer attached: nothing to read the world size from
    opt = module.configure_optimizers()
    module.optimizers = lambda: opt
    decay, no_decay = opt.param_groups
    for step, wd in ((0, 0.04), (5, 0.22), (10, 0.4)):
        module._apply_schedules(step)
        assert decay["weight_decay"] == pytest.approx(wd) and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in m.named_parameters()}
    assert "predictor.mask_token" in {names[id(p)] for p in no_decay["params"]}


def test_one_train_step_then_ema():
    m = make()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    out = m(rand_batch(), step_ctx())
    check_step(m, out)  # DDP without find_unused_parameters stays happy
    assert all(p.grad is None for p in m.target_encoder.parameters())
    before = m.target_encoder.blocks[0].attn.qkv.weight.clone()
    opt.step()
    ema_update(m.ema_pairs(), m.ema_momentum(0, 1))
    w_o, w_t = m.encoder.blocks[0].attn.qkv.weight, m.target_encoder.blocks[0].attn.qkv.weight
    assert not torch.equal(w_o, before)
    torch.testing.assert_close(w_t, 0.996 * before + 0.004 * w_o)


def test_truncate_option_reaches_the_collator():
    assert make().masks.truncate == "random"
    m = make(truncate="raster")
    masks = m.masks.sample(8, torch.Generator().manual_seed(0))
    k = masks.context.shape[1]
    assert all(torch.equal(masks.context[b], masks.context_mask[b].nonzero()[:k, 0]) for b in range(8))
    with pytest.raises(ByonError, match="unknown ijepa.truncate 'first'"):
        make(truncate="first")


def test_bad_predictor_width_is_a_one_line_error():
    with pytest.raises(ByonError, match="predictor_dim=18 must be divisible by 4"):
        make(predictor_dim=18)
    with pytest.raises(ByonError, match="ijepa.min_keep=8"):
        make(min_keep=8)


def test_tiny_pretrain_and_knn_eval(tmp_path, tiny_overrides):
    res = pretrain_knn("ijepa", tmp_path, tiny_overrides)
    assert res["default_feature"] == "mean" and 0.0 <= res["top1"] <= 100.0
