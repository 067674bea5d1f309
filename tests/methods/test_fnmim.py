import pytest
import torch

import byon.methods.fnmim as fnmim_mod
from byon.corruption.masking import token_mask
from byon.corruption.patches import patchify
from byon.errors import ByonError
from byon.losses import disruption_loss
from byon.methods import METHODS, build_config, load_config
from byon.methods.fnmim import FeatureNoiseMIM

from .common import CONFIGS, assert_trains_every_parameter, make_method, method_from, rand_images, step_ctx

# paper.yaml, imagenet.yaml: the recipes
ROWS = sorted(p for p in (CONFIGS / "fnmim").glob("*.yaml") if p.stem not in ("paper", "imagenet"))


def make(seed: int = 0, depth: int = 4, **fnmim) -> FeatureNoiseMIM:
    return make_method("fnmim", seed, model={"depth": depth}, **fnmim)


def hand_groups(B: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """30 masked tokens per image (shifted per image); the method noises the first 9 visible ones."""
    masked = torch.stack([(torch.arange(49) < 30).roll(3 * i) for i in range(B)])
    noised = torch.zeros_like(masked)
    for i in range(B):
        noised[i, (~masked[i]).nonzero()[:9, 0]] = True
    return masked, noised


@pytest.fixture
def fixed(monkeypatch):
    masked, _ = hand_groups(8)
    monkeypatch.setattr(fnmim_mod, "random_masking", lambda B, *a, **k: token_mask(masked[:B]))


def test_registered_with_defaults_and_recipe():
    assert METHODS["fnmim"] is FeatureNoiseMIM
    cfg = load_config(CONFIGS / "fnmim" / "paper.yaml", {"model": {"preset": "vit-test"}})
    m = cfg.method_cfg
    assert (m.mask_ratio, m.noise_ratio, m.inject, m.sigma, m.disruption_weight) == (0.6, 0.2, 2, (0.1, 1.0), 0.1)
    assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.grad_clip == 5.0


def test_tokens_split_into_disjoint_masked_noised_and_clean():
    model = make()
    masked, noised, sigma = model.corrupt(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert masked.sum(1).eq(30).all() and noised.sum(1).eq(9).all() and not (masked & noised).any()
    assert ((sigma >= 0.1) & (sigma <= 1.0)).all() and sigma.std() > 0


def test_losses_touch_masked_and_noised_tokens_only(fixed):
    model, x = make(), rand_images()
    masked, noised = hand_groups()
    seen, orig = {}, model.head.forward
    model.head.forward = lambda h: seen.setdefault("pred", orig(h))
    out = model({"image": x}, step_ctx())
    err = (seen["pred"] - patchify(x, 4)).abs().mean(-1)
    torch.testing.assert_close(out["demask"], err[masked].mean())
    torch.testing.assert_close(out["denoise"], err[noised].mean())
    torch.testing.assert_close(out["loss"], out["demask"] + out["denoise"] + 0.1 * out["disruption"])
    clean = ~(masked | noised)
    for where, changed in ((clean, ()), (noised, ("denoise",)), (masked, ("demask",))):
        model.head.forward = lambda h, w=where: orig(h) + 5.0 * w.unsqueeze(-1)
        o = model({"image": x}, step_ctx())
        for k in ("demask", "denoise", "disruption"):
            assert torch.allclose(o[k], out[k]) != (k in changed), (k, changed)


def block_inputs(model: FeatureNoiseMIM, x: torch.Tensor, sigma: float) -> list[torch.Tensor]:
    """[patch-embed input, input of block 0, …, input of the last block, head input]."""
    model.cfg.sigma = (sigma, sigma)
    seen = []
    hooks = [model.encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0]))]
    hooks += [b.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for b in model.encoder.blocks]
    hooks.append(model.head.register_forward_pre_hook(lambda m, a: seen.append(a[0])))
    model({"image": x}, step_ctx())
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("inject, first", [("pixel", 0), (0, 1), (1, 2), (3, 4), (4, 5)])
def test_noise_is_injected_where_configured_with_rms_relative_scale(fixed, inject, first):
    """Everything before the injection point equals a σ = 0 run; the first differing tensor differs only at the
    noised tokens, by σ·rms(h)·ε with ε ~ N(0, 1)."""
    model, x = make(inject=inject, disruption_weight=0.0).eval(), rand_images(8)
    _, noised = hand_groups(8)
    clean_run, noisy_run = block_inputs(model, x, 0.0), block_inputs(model, x, 0.7)
    for a, b in zip(clean_run[:first], noisy_run[:first]):
        torch.testing.assert_close(a, b)
    a, b = clean_run[first], noisy_run[first]
    if inject == "pixel":
        a, b = patchify(a, 4), patchify(b, 4)
    elif first <= 4:  # block inputs carry the CLS token (it is never noised)
        torch.testing.assert_close(a[:, 0], b[:, 0])
        a, b = a[:, 1:], b[:, 1:]
    diff = b - a
    assert diff[~noised].abs().max() == 0 and diff[noised].abs().min() > 0
    if first <= 4:
        eps = diff[noised] / (0.7 * a[noised].pow(2).mean(-1, keepdim=True).sqrt())
        assert abs(eps.mean().item()) < 0.06 and abs(eps.std().item() - 1) < 0.06


@pytest.mark.parametrize("inject, after", [("pixel", [0, 1, 2, 3]), (0, [0, 1, 2, 3]), (2, [2, 3]), (4, [])])
def test_disruption_reads_the_blocks_after_the_injection(fixed, inject, after):
    model, x = make(inject=inject), rand_images()
    masked, noised = hand_groups()
    assert model.after == after
    seen, orig = {}, model.encoder.forward_tokens

    def spy(tokens, **kw):
        seen["kw"], seen["out"] = kw, orig(tokens, **kw)
        return seen["out"]

    model.encoder.forward_tokens = spy
    out = model({"image": x}, step_ctx())
    assert list(seen["kw"]["return_attn"]) == after
    cls = torch.zeros(4, 1, dtype=torch.bool)
    want = disruption_loss([seen["out"][2][i] for i in after], torch.cat([cls, noised], 1), torch.cat([cls, masked], 1))
    if after:
        torch.testing.assert_close(out["disruption"], want)
        assert out["disruption"] > 0
    else:
        assert "disruption" not in out
    off = make(inject=inject, disruption_weight=0.0)
    off.encoder.forward_tokens = spy
    o = off({"image": x}, step_ctx())
    assert list(seen["kw"]["return_attn"]) == [] and "disruption" not in o
    torch.testing.assert_close(o["loss"], o["demask"] + o["denoise"])


def test_a_few_steps_train_every_parameter_and_reduce_the_loss():
    losses = assert_trains_every_parameter(make().train(), lambda: {"image": rand_images(8)})
    assert losses[-1] < losses[0]


def test_ablation_rows_load_and_train_one_step_at_depth_6():
    rows = {p.stem: load_config(p, {"model": {"preset": "vit-test", "depth": 6}}) for p in ROWS}
    assert {k: (c.method_cfg.inject, c.method_cfg.disruption_weight) for k, c in rows.items()} == {
        "inject_pixel": ("pixel", 0.0), "inject_block0": (0, 0.0), "inject_block2": (2, 0.0),
        "inject_block4": (4, 0.0), "inject_block6": (6, 0.0), "block2_disruption": (2, 0.1)}
    for name, cfg in rows.items():
        assert cfg.data.dataset == "fashion-mnist" and cfg.train.epochs == 8  # inherited from configs/fnmim.yaml
        model = method_from(cfg)
        out = model({"image": rand_images(2)}, step_ctx())
        out["loss"].backward()
        assert torch.isfinite(out["loss"]), name


def test_config_round_trip_and_bad_values():
    for inject in ("pixel", 3):
        cfg = load_config(CONFIGS / "fnmim" / "paper.yaml", {"fnmim": {"inject": inject}})
        again = build_config(cfg.to_dict())
        assert again.to_dict() == cfg.to_dict() and again.method_cfg.inject == inject
    assert load_config(None, {"method": "fnmim", "fnmim": {"inject": "2"}}).method_cfg.inject == 2
    with pytest.raises(ByonError, match="blocks"):
        make(depth=2, inject=3)
    for bad, match in (({"inject": "pixels"}, "pixel"), ({"inject": -1}, "inject"), ({"sigma": [1.0, 0.5]}, "sigma"),
                       ({"mask_ratio": 0.7, "noise_ratio": 0.4}, "noise_ratio"), ({"loss": "l2"}, "mse"),
                       ({"disruption_weight": -1}, "disruption_weight")):
        with pytest.raises(ByonError, match=match):
            load_config(None, {"method": "fnmim", "fnmim": bad})
