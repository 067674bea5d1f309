import math

import pytest
import torch

import byon.methods.diffmae as diffmae_mod
from byon.corruption.masking import token_mask
from byon.corruption.patches import norm_pix, patchify, unpatchify
from byon.errors import ByonError
from byon.methods import METHODS, build_config, load_config
from byon.methods.diffmae import DiffMAE

from .common import CONFIGS, TINY, assert_trains_every_parameter, make_method, rand_images, step_ctx

CONFIG = CONFIGS / "diffmae" / "paper.yaml"  # the paper's recipe; configs/diffmae.yaml is the val-tuned one


def make(seed: int = 0, **diffmae) -> DiffMAE:
    return make_method("diffmae", seed, **diffmae)


def spy_decoder(model: DiffMAE, offset=None) -> dict:
    """Record the decoder's inputs and output; optionally add `offset` (B, N, P) to its output."""
    seen, orig = {}, type(model.decoder).forward.__get__(model.decoder)  # the unwrapped forward

    def fwd(latent, x_t, m, t):
        seen.update(latent=latent, x_t=x_t, m=m, t=t, pred=orig(latent, x_t, m, t))
        return seen["pred"] if offset is None else seen["pred"] + offset

    model.decoder.forward = fwd
    return seen


def hand_mask(B: int = 2) -> torch.Tensor:
    mask = torch.ones(B, 49, dtype=torch.bool)
    mask[0, :12] = False
    mask[1, 30:42] = False  # 12 visible each = int(49 · 0.25)
    return mask


def test_registered_with_maes_recipe():
    assert METHODS["diffmae"] is DiffMAE
    cfg = load_config(CONFIG, TINY)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05 and cfg.optim.blr == 1.5e-4
    m = cfg.method_cfg
    assert (m.mask_ratio, m.decoder, m.schedule, m.num_timesteps) == (0.75, "joint", "cosine", 1000)
    assert m.norm_pix is False and diffmae_mod.DiffMAEConfig().norm_pix is False  # the spec's clean pixels x0


def test_loss_is_x0_mse_on_masked_patches_only(monkeypatch):
    mask = hand_mask()
    monkeypatch.setattr(diffmae_mod, "random_masking", lambda *a, **k: token_mask(mask))
    model, x = make(), rand_images(2)
    seen = spy_decoder(model)
    out = model({"image": x}, step_ctx())
    x0 = patchify(x, 4)  # clean, dataset-normalised pixels
    err = (seen["pred"] - x0).pow(2).mean(-1)
    torch.testing.assert_close(out["loss"], err[mask].mean())
    spy_decoder(model, offset=50.0 * (~mask).unsqueeze(-1))
    torch.testing.assert_close(model({"image": x}, step_ctx())["loss"], out["loss"])
    spy_decoder(model, offset=1.0 * mask.unsqueeze(-1))
    assert model({"image": x}, step_ctx())["loss"] > out["loss"]


def test_encoder_sees_only_the_clean_visible_patches(monkeypatch):
    mask = hand_mask()
    monkeypatch.setattr(diffmae_mod, "random_masking", lambda *a, **k: token_mask(mask))
    model, x = make(), rand_images(2)
    lengths = []
    model.encoder.blocks[0].register_forward_hook(lambda mod, i, o: lengths.append(o.shape[1]))
    seen = spy_decoder(model)
    model({"image": x}, step_ctx())
    latent = seen["latent"]
    p = patchify(x, 4)
    model({"image": unpatchify(torch.where(mask.unsqueeze(-1), p + 5.0, p), 4, 1)}, step_ctx())
    assert lengths == [1 + 12, 1 + 12]
    torch.testing.assert_close(seen["latent"], latent)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decoder_input_is_the_ddpm_forward_process(schedule):
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε with ᾱ_t computed by hand and ε ~ N(0, 1)."""
    model, T = make(schedule=schedule), 1000
    seen = spy_decoder(model)
    x = rand_images(16)
    model({"image": x}, step_ctx(3))
    t = seen["t"]
    if schedule == "cosine":
        f = lambda u: math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        ab = torch.tensor([f(int(s) + 1) / f(0) for s in t], dtype=torch.float64)
    else:
        cum = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)
        ab = cum[t]
    keep = t < 990  # the cosine betas are clipped at 0.999 in the last steps
    x0 = patchify(x, 4).double()
    eps = (seen["x_t"].double() - ab.sqrt()[:, None, None] * x0) / (1 - ab).sqrt()[:, None, None]
    eps = eps[keep]
    assert keep.sum() >= 12 and t.min() >= 0 and t.max() < T and len(t.unique()) > 8
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05
    torch.testing.assert_close(model.diffusion.alphas_cumprod[t][keep].double(), ab[keep], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("decoder", ["joint", "cross", "cross-self"])
def test_each_decoder_trains_every_parameter(decoder):
    losses = assert_trains_every_parameter(make(decoder=decoder).train(), lambda: {"image": rand_images(8)}, steps=3)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_norm_pix_targets_and_same_generator_same_step():
    model = make(norm_pix=True)
    seen = spy_decoder(model)
    x = rand_images(2)
    a = model({"image": x}, step_ctx(1))
    x0 = norm_pix(patchify(x, 4))
    err = (seen["pred"] - x0).pow(2).mean(-1)
    torch.testing.assert_close(a["loss"], err[seen["m"].mask].mean())
    assert torch.equal(model({"image": x}, step_ctx(1))["loss"], a["loss"])


def test_eval_is_the_encoder_on_clean_images_and_config_round_trips():
    model = make().eval()
    x = rand_images()
    torch.testing.assert_close(model.eval_encoder().features(x)["cls"], model.encoder.forward_encoder(x)[:, 0])
    cfg = load_config(CONFIG)
    assert build_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    for bad, match in (({"decoder": "crossself"}, "cross-self"), ({"schedule": "cosin"}, "cosine"),
                       ({"mask_ratio": 0.0}, "mask_ratio"), ({"num_timesteps": 0}, "num_timesteps")):
        with pytest.raises(ByonError, match=match):
            load_config(None, {"method": "diffmae", "diffmae": bad})
