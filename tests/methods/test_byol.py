import pytest
import torch
import torch.nn.functional as F

from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.byol import BYOL
from byon.nn.ema import ema_update

from .common import CONFIGS, RGB, TINY, check_step, make_method, pretrain_knn, rand_batch, step_ctx


def make(seed: int = 0, **byol) -> BYOL:
    """`info=` (default INFO) passes through to make_method."""
    return make_method("byol", seed, **byol).train()


def test_registered_recipe_and_config_file():
    assert METHODS["byol"] is BYOL and BYOL.default_feature == "cls"
    cfg = load_config(CONFIGS / "byol" / "paper.yaml", TINY)
    assert (cfg.optim.blr, cfg.optim.betas, cfg.optim.weight_decay) == (1.5e-4, (0.9, 0.999), 0.1)
    c = cfg.method_cfg
    assert (c.crop_scale, c.blur, c.solarize, c.jitter, c.grayscale) == ((0.2, 1.0), (1.0, 0.1), (0.0, 0.2), 0.8, 0.2)
    m = make()
    assert m.eval_encoder() is m.encoder
    assert m.blur_sigma == pytest.approx((0.0125, 0.25))  # BYOL's (0.1, 2.0) px at 224 px, at 28 px


def test_views_are_seeded_and_asymmetric():
    m = make()
    raw = rand_batch(8)["raw"]
    a1, a2 = m.views(raw, torch.Generator().manual_seed(0))
    b1, b2 = m.views(raw, torch.Generator().manual_seed(0))
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)
    assert a1.shape == (8, 1, 28, 28) and a1.dtype == torch.float32


def test_grayscale_views_get_no_colour_jitter_colour_views_do():
    """With crop, flip, blur and solarise off, a grayscale view is the image; a colour view is jittered."""
    off = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip": 0.0, "blur": (0.0, 0.0),
           "solarize": (0.0, 0.0)}
    gray = make(**off)
    raw = rand_batch(8)["raw"]
    v = gray.view(raw, 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v, (raw.float() / 255 - 0.5) / 0.25, atol=1e-5, rtol=0)
    rgb = make(info=RGB, **off)
    raw3 = rand_batch(8, C=3)["raw"]
    v3 = rgb.view(raw3, 0, torch.Generator().manual_seed(0))
    assert (v3 - (raw3.float() / 255 - 0.5) / 0.25).abs().amax(dim=(1, 2, 3)).gt(1e-3).sum() >= 4  # p 0.8


def test_solarise_only_in_view_two_blur_always_in_view_one():
    m = make(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, solarize=(0.0, 1.0), blur=(1.0, 0.0),
             blur_sigma=(1.0, 1.0))
    raw = torch.full((2, 1, 28, 28), 230, dtype=torch.uint8)
    raw[:, :, :, :14] = 20
    v1, v2 = (x * 0.25 + 0.5 for x in m.views(raw, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(v2[:, :, :, 20:], torch.full_like(v2[:, :, :, 20:], 1 - 230 / 255))  # solarised
    assert (v1[:, 0, :, 13] > 20 / 255 + 0.01).all()  # blurred across the edge
    assert v1.max() < 230 / 255 + 1e-4  # never solarised


def test_loss_is_symmetric_two_minus_two_cos():
    m = make()
    b = rand_batch()
    g = torch.Generator().manual_seed(0)
    v1, v2 = m.views(b["raw"], g)
    out = m(b, step_ctx())
    with torch.no_grad():
        y = m.encoder.forward_encoder(torch.cat([v1, v2]))[:, 0]
        p1, p2 = m.predictor(m.projector(y[:4])), m.predictor(m.projector(y[4:]))
        t = m.target_encoder.forward_encoder(torch.cat([v1, v2]))[:, 0]
        z1, z2 = m.target_projector(t[:4]), m.target_projector(t[4:])
    expect = (2 - 2 * F.cosine_similarity(p1, z2)).mean() + (2 - 2 * F.cosine_similarity(p2, z1)).mean()
    torch.testing.assert_close(out["loss"], expect)
    assert 0.0 <= out["loss"] <= 8.0 and "z_std" in out and "cos" in out


def test_cosine_momentum_schedule_endpoints():
    m = make()
    assert m.ema_momentum(0, 1) == pytest.approx(0.99)
    assert m.ema_momentum(1, 2) == pytest.approx(0.995)
    assert m.ema_momentum(1, 1) == pytest.approx(1.0)
    assert make(ema_base=0.996).ema_momentum(0, 1) == pytest.approx(0.996)


def test_one_train_step_only_the_online_branch_learns():
    m = make()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    out = m(rand_batch(), step_ctx())
    check_step(m, out)
    assert not any(p.requires_grad for p in [*m.target_encoder.parameters(), *m.target_projector.parameters()])
    before = m.target_projector.net[0].weight.clone()
    opt.step()
    pairs = m.ema_pairs()
    assert pairs == [(m.encoder, m.target_encoder), (m.projector, m.target_projector)]
    ema_update(pairs, 0.99)
    torch.testing.assert_close(m.target_projector.net[0].weight, 0.99 * before + 0.01 * m.projector.net[0].weight)


def test_bad_probabilities_are_one_line_errors():
    with pytest.raises(ByonError, match="byol.blur holds probabilities"):
        make(blur=(1.5, 0.1))


def test_tiny_pretrain_and_knn_eval(tmp_path, tiny_overrides):
    res = pretrain_knn("byol", tmp_path, tiny_overrides)
    assert res["default_feature"] == "cls" and 0.0 <= res["top1"] <= 100.0


def test_the_engine_draws_no_view_for_byol(tmp_path, monkeypatch, tiny_overrides):
    """BYOL draws its two views from the raw batch itself: the engine hands it no augmented view to ignore."""
    from byon.engine.run import train
    from byon.methods import build_config

    seen = []
    real = BYOL.forward
    monkeypatch.setattr(BYOL, "forward", lambda self, batch, ctx: seen.append(set(batch)) or real(self, batch, ctx))
    over = tiny_overrides | {"method": "byol"}
    over["train"] = over["train"] | {"max_steps": 2}
    train(build_config(over), tmp_path / "run")
    assert seen and all(keys == {"raw", "label"} for keys in seen)


def test_per_view_and_joint_encoder_passes_give_the_same_step():
    """The encoders have LayerNorm only, so one pass per view equals one pass over both (to float rounding) —
    losses and gradients alike; only the memory pattern differs (page faults of the 2B batch on CPU)."""
    outs, grads = [], []
    for passes in ("per_view", "joint"):
        m = make(encoder_passes=passes)
        out = m(rand_batch(B=8), step_ctx())
        out["loss"].backward()
        outs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in m.encoder.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0]["loss"], outs[1]["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ByonError, match="encoder_passes"):
        make(encoder_passes="both")
