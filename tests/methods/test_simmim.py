import pytest
import torch

import byon.methods.simmim as simmim_mod
from byon.corruption.masking import block_masking
from byon.corruption.patches import patchify, unpatchify
from byon.errors import ByonError
from byon.methods import METHODS, build_config, load_config
from byon.methods.simmim import SimMIM

from .common import CONFIGS, TINY, assert_trains_every_parameter, make_method, rand_images, step_ctx

CONFIG = CONFIGS / "simmim" / "paper.yaml"  # the paper's recipe; configs/simmim.yaml is the val-tuned one


def make(seed: int = 0, **simmim) -> SimMIM:
    return make_method("simmim", seed, **simmim)


def hand_mask(monkeypatch, mask: torch.Tensor) -> None:
    monkeypatch.setattr(simmim_mod, "block_masking", lambda B, *a, **k: mask[:B])


def test_registered_with_simmims_recipe():
    assert METHODS["simmim"] is SimMIM
    cfg = load_config(CONFIG, TINY)
    assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.weight_decay == 0.05 and cfg.optim.grad_clip == 5.0
    assert cfg.optim.blr * 512 / 256 == pytest.approx(1e-4)  # 1e-4 · B / 512
    assert cfg.method_cfg.mask_ratio == 0.6 and cfg.method_cfg.mask_patch == 1
    assert SimMIM.default_feature == "mean"


def test_loss_is_l1_on_masked_pixels_only(monkeypatch):
    model = make()
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, :30], mask[1, 19:] = True, True
    hand_mask(monkeypatch, mask)
    x = rand_images(2)
    captured = {}
    orig = model.head.forward
    model.head.forward = lambda h: captured.setdefault("pred", orig(h))
    out = model({"image": x}, step_ctx())
    err = (captured["pred"] - patchify(x, 4)).abs()  # (B, N, P)
    torch.testing.assert_close(out["loss"], err[mask].sum() / (mask.sum() * 16))

    # a different prediction on visible tokens leaves the loss unchanged; on masked tokens it does not
    model.head.forward = lambda h: orig(h) + 100.0 * (~mask).unsqueeze(-1)
    torch.testing.assert_close(model({"image": x}, step_ctx())["loss"], out["loss"])
    model.head.forward = lambda h: orig(h) + 1.0 * mask.unsqueeze(-1)
    assert model({"image": x}, step_ctx())["loss"] > out["loss"]


def test_masked_pixels_never_reach_the_encoder(monkeypatch):
    model = make()
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[:, ::2] = True
    hand_mask(monkeypatch, mask)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = rand_images(2)
    model({"image": x}, step_ctx())
    p = patchify(x, 4)
    p2 = torch.where(mask.unsqueeze(-1), torch.randn_like(p), p)
    model({"image": unpatchify(p2, 4, 1)}, step_ctx())
    torch.testing.assert_close(seen[0], seen[1])


def test_mask_comes_from_the_step_generator_at_the_configured_mask_patch(monkeypatch):
    model = make(mask_patch=2)
    seen = {}
    monkeypatch.setattr(simmim_mod, "block_masking", lambda *a, **k: seen.setdefault("mask", block_masking(*a, **k)))
    model({"image": rand_images()}, step_ctx(5))
    assert torch.equal(seen["mask"], block_masking(4, 7, 2, 0.6, torch.Generator().manual_seed(5)))


def test_a_few_steps_train_every_parameter_and_reduce_the_loss():
    losses = assert_trains_every_parameter(make().train(), lambda: {"image": rand_images(8)})
    assert losses[-1] < losses[0]


def test_eval_is_the_plain_encoder_on_clean_images_and_state_round_trips():
    model = make().eval()
    x = rand_images()
    torch.testing.assert_close(model.eval_encoder().features(x)["mean"],
                               model.encoder.forward_encoder(x)[:, 1:].mean(1))
    fresh = make(seed=1)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh({"image": x}, step_ctx())["loss"], model({"image": x}, step_ctx())["loss"])
    assert "mask_token" in model.no_weight_decay()


def test_config_round_trip_and_bad_values():
    cfg = load_config(CONFIG)
    assert build_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    for bad, match in (({"mask_ratio": 0.0}, "mask_ratio"), ({"mask_patch": 0}, "mask_patch"),
                       ({"mask_ratio": 1.0}, "mask_ratio"), ({"mask_patches": 2}, "mask_patch")):
        with pytest.raises(ByonError, match=match):
            load_config(None, {"method": "simmim", "simmim": bad})
