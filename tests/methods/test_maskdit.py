import math

import pytest
import torch

import byon.methods.maskdit as maskdit_mod
from byon.corruption.diffusion import edm_sigma, edm_weight
from byon.corruption.masking import token_mask
from byon.corruption.patches import norm_pix, patchify
from byon.errors import ByonError
from byon.methods import METHODS, build_config, load_config
from byon.methods.maskdit import MaskDiT

from .common import CONFIGS, TINY, assert_trains_every_parameter, make_method, rand_images, step_ctx

CONFIG = CONFIGS / "maskdit" / "paper.yaml"  # the paper's recipe; configs/maskdit.yaml is the val-tuned one
SIGMAS = torch.tensor([0.02, 0.5, 2.0, 20.0])


def make(seed: int = 0, **maskdit) -> MaskDiT:
    return make_method("maskdit", seed, **maskdit)


def hand_mask() -> torch.Tensor:
    base = torch.arange(49) % 2 == 0  # 25 masked, 24 kept = int(49 · 0.5)
    return torch.stack([base.roll(i) for i in range(4)])


@pytest.fixture
def fixed(monkeypatch):
    """Hand-built σ and mask for the step."""
    monkeypatch.setattr(maskdit_mod, "edm_sigma", lambda B, *a, **k: SIGMAS[:B].clone())
    monkeypatch.setattr(maskdit_mod, "random_masking", lambda *a, **k: token_mask(hand_mask()))


def spy(model: MaskDiT, offset=None) -> dict:
    """Record the encoder input / c_noise and the decoder output F; optionally add `offset` to F."""
    seen = {}
    enc, dec = MaskDiT.encode.__get__(model), type(model.decoder).forward.__get__(model.decoder)  # unwrapped

    def encode(x, c_noise, ids_keep=None):
        seen.update(net_in=x, c_noise=c_noise)
        return enc(x, c_noise, ids_keep)

    def decode(*a, **k):
        seen["F"] = dec(*a, **k)
        return seen["F"] if offset is None else seen["F"] + offset

    model.encode, model.decoder.forward = encode, decode
    return seen


def perturb_(model: MaskDiT) -> None:
    """Move the zero-initialised adaLN modulation off zero so the conditioning matters."""
    for p in model.modulation.parameters():
        p.data = 0.05 * torch.randn_like(p)


def test_registered_with_maskdits_recipe():
    assert METHODS["maskdit"] is MaskDiT
    cfg = load_config(CONFIG, TINY)
    assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.weight_decay == 0.0
    assert cfg.optim.blr * 1024 / 256 == pytest.approx(1e-4)  # constant 1e-4 at batch 1024
    m = cfg.method_cfg
    assert (m.mask_ratio, m.p_mean, m.p_std, m.sigma_data, m.mae_weight, m.mae_target) == (
        0.5, -1.2, 1.2, 0.5, 0.1, "noisy")


def test_edm_preconditioning_coefficients_at_known_sigmas():
    c_skip, c_out, c_in, c_noise = make().precondition(torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.2, 0.25 / 4.25]))
    torch.testing.assert_close(c_out, torch.tensor([0.25 / math.sqrt(0.5), 0.5 / math.sqrt(1.25), 1 / math.sqrt(4.25)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(1.25), 1 / math.sqrt(4.25)]))
    torch.testing.assert_close(c_noise, torch.tensor([math.log(0.5) / 4, 0.0, math.log(2.0) / 4]))
    torch.testing.assert_close(edm_weight(torch.tensor([0.5, 1.0, 2.0])), torch.tensor([8.0, 5.0, 4.25]))


def test_sigma_is_log_normal_with_edms_moments():
    log_s = edm_sigma(20000, torch.Generator().manual_seed(0), -1.2, 1.2).log()
    assert log_s.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_s.std().item() == pytest.approx(1.2, abs=0.03)
    model = make()
    seen = spy(model)
    out = model({"image": rand_images(4)}, step_ctx(7))
    want = edm_sigma(4, torch.Generator().manual_seed(7), -1.2, 1.2)  # the step's first draw
    torch.testing.assert_close(out["log_sigma_mean"], want.log().mean())
    torch.testing.assert_close(seen["c_noise"], want.log() / 4)


def test_decoder_prediction_starts_at_zero_as_in_maskdit(fixed):
    """The official model zero-initialises its final layer (DiT's): F ≡ 0, so D(x) = c_skip·x at init."""
    model, x = make(), rand_images(4)
    perturb_(model)
    assert model.decoder.pred.weight.eq(0).all() and model.decoder.pred.bias.eq(0).all()
    seen = spy(model)
    model({"image": x}, step_ctx())
    assert seen["F"].eq(0).all()


def test_network_input_is_c_in_times_data_plus_sigma_noise(fixed):
    model, x = make(), rand_images(4)
    seen = spy(model)
    model({"image": x}, step_ctx())
    _, _, c_in, c_noise = model.precondition(SIGMAS)
    noise = seen["net_in"] / c_in[:, None, None, None] - 0.5 * x  # y = σ_data · image
    std = noise.flatten(1).std(1)
    assert ((std / SIGMAS - 1).abs() < 0.1).all() and (noise.flatten(1).mean(1).abs() < 0.15 * SIGMAS).all()
    torch.testing.assert_close(seen["c_noise"], c_noise)


def test_loss_is_edm_weighted_denoising_on_kept_plus_mae_on_masked_tokens(fixed):
    model, x = make(), rand_images(4)
    perturb_(model)
    seen = spy(model)
    out = model({"image": x}, step_ctx())
    mask = hand_mask()
    c_skip, c_out, c_in, _ = (c[:, None, None] for c in model.precondition(SIGMAS))
    y = 0.5 * patchify(x, 4)
    x_noisy = patchify(seen["net_in"], 4) / c_in
    D = c_skip * x_noisy + c_out * seen["F"]
    lam = edm_weight(SIGMAS)[:, None]
    denoise = (lam * (D - y).pow(2).mean(-1))[~mask].mean()
    mae = (D - norm_pix(x_noisy)).pow(2).mean(-1)[mask].mean()
    torch.testing.assert_close(out["denoise"], denoise, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["mae"], mae, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss"], denoise + 0.1 * mae, rtol=1e-4, atol=1e-5)

    # F on masked tokens reaches only the MAE term, on kept tokens only the denoising term
    spy(model, offset=3.0 * mask.unsqueeze(-1))
    a = model({"image": x}, step_ctx())
    torch.testing.assert_close(a["denoise"], out["denoise"])
    assert a["mae"] > out["mae"]
    spy(model, offset=3.0 * (~mask).unsqueeze(-1))
    b = model({"image": x}, step_ctx())
    torch.testing.assert_close(b["mae"], out["mae"])
    assert b["denoise"] > out["denoise"]


def test_clean_mae_target_switch(fixed):
    model, x = make(mae_target="clean"), rand_images(4)
    seen = spy(model)
    out = model({"image": x}, step_ctx())
    c_skip, c_out, c_in, _ = (c[:, None, None] for c in model.precondition(SIGMAS))
    D = c_skip * patchify(seen["net_in"], 4) / c_in + c_out * seen["F"]
    want = (D - norm_pix(0.5 * patchify(x, 4))).pow(2).mean(-1)[hand_mask()].mean()
    torch.testing.assert_close(out["mae"], want, rtol=1e-4, atol=1e-5)


def test_probe_features_are_clean_deterministic_and_export_as_a_plain_vit():
    model = make().eval()
    perturb_(model)
    x = rand_images()
    f = model.features(x)
    torch.testing.assert_close(model.features(x)["mean"], f["mean"])  # no noise is drawn
    folded = model.eval_encoder()
    g = folded.features(x)
    torch.testing.assert_close(g["mean"], f["mean"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g["cls"], f["cls"], atol=1e-5, rtol=1e-4)
    assert set(folded.state_dict()) == set(model.encoder.state_dict())
    # the probe σ matters: it sets the conditioning and c_in
    other = make(probe_sigma=1.0).eval()
    other.load_state_dict(model.state_dict())
    assert not torch.allclose(other.features(x)["mean"], f["mean"], atol=1e-4)
    _, _, c_in, c_noise = model.precondition(torch.tensor([0.05]))
    tokens = model.encode(x * c_in * 0.5, c_noise.expand(4))
    torch.testing.assert_close(f["mean"], tokens[:, 1:].mean(1))


def test_a_few_steps_train_every_parameter():
    losses = assert_trains_every_parameter(make().train(), lambda: {"image": rand_images(8)})
    assert losses[-1] < losses[0]


def test_unmasked_dit_has_no_mae_term_and_config_round_trips():
    model = make(mask_ratio=0.0)
    out = model({"image": rand_images()}, step_ctx())
    assert "mae" not in out and model.decoder.mask_token is None
    torch.testing.assert_close(out["loss"], out["denoise"])
    cfg = load_config(CONFIG)
    assert build_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    fresh = make(seed=1)
    fresh.load_state_dict(make().state_dict())
    x = rand_images()
    torch.testing.assert_close(fresh({"image": x}, step_ctx())["loss"], make()({"image": x}, step_ctx())["loss"])
    for bad, match in (({"mae_target": "noisey"}, "noisy"), ({"sigma_data": 0}, "sigma_data"),
                       ({"probe_sigma": -1}, "probe_sigma"), ({"mask_ratio": 1.0}, "mask_ratio")):
        with pytest.raises(ByonError, match=match):
            load_config(None, {"method": "maskdit", "maskdit": bad})
