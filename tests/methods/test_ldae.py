import math

import pytest
import torch

from byon.cli import main
from byon.corruption.patches import patchify
from byon.data.imagedata import ImageData
from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.ldae import LDAE
from byon.rundir import load_run

from .common import assert_trains_every_parameter, make_method, rand_images, step_ctx

RAW = torch.randint(0, 256, (48, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
TINY = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress"]


def make(fit: bool = True, seed: int = 0, **ldae) -> LDAE:
    m = make_method("ldae", seed, **ldae)
    if fit:
        m.setup_data(ImageData(RAW, None, [], "synthetic"))
    return m


def images(B: int = 4) -> torch.Tensor:
    return rand_images(B, seed=1)


def test_registered_with_dits_recipe_and_default_latent_dim():
    assert METHODS["ldae"] is LDAE
    cfg = load_config("configs/ldae/paper.yaml", {"model": {"preset": "vit-test"}})
    assert cfg.optim.blr == 1e-4 and cfg.optim.weight_decay == 0.0 and cfg.optim.betas == (0.9, 0.999)
    assert cfg.optim.warmup_epochs == 1.0  # the protocol's 1 warm-up epoch, not the paper's quarter of training
    assert make(fit=False).latent_dim == 4  # 4×4×1 patches
    assert make(fit=False, noise_space="pixel").latent_dim == 16
    with pytest.raises(ByonError, match="exceeds the patch dimension 16"):
        make(fit=False, latent_dim=17)


def test_unfitted_tokenizer_is_an_error_but_pixel_needs_no_fit():
    with pytest.raises(ByonError, match="not fitted"):
        make(fit=False)({"image": images()}, step_ctx())
    assert torch.isfinite(make(fit=False, noise_space="pixel")({"image": images()}, step_ctx())["loss"])


def test_corruption_lives_in_the_kept_latent_and_drops_the_residual():
    m = make(latent_dim=4)
    x = patchify(images(), 4)
    sigma = torch.tensor([0.0, 0.5, 1.0, 1.4])
    x_t, noise = m.corrupt(x, sigma, torch.Generator().manual_seed(0))
    z_t = m.pca.encode(x_t)
    assert z_t[..., 4:].abs().max() < 1e-4  # the PCA residual is not given to the network
    torch.testing.assert_close(x_t[0], m.pca.project(x[0], 4), atol=1e-5, rtol=0)  # σ = 0: clean projection
    # the kept coordinates moved by σ·ε, with ε ~ N(0, I)
    eps = (z_t[1:, :, :4] - m.pca.encode(x)[1:, :, :4]) / sigma[1:, None, None]
    assert abs(eps.std().item() - 1) < 0.15
    torch.testing.assert_close(noise[1:] * sigma[1:, None, None], x_t[1:] - m.pca.project(x[1:], 4), atol=1e-5,
                               rtol=0)


def spy_net(m: LDAE, out_fn):
    """Replace the network's output by out_fn(x_clean_patches, seen) and record what it saw."""
    seen = {}

    def fwd(img, t):
        seen["input"], seen["t"] = img, t
        return out_fn(seen)

    m.net.forward = fwd
    return seen


def test_loss_weights_residual_components_by_a_tenth_and_lambda_by_sigma():
    m = make(latent_dim=4, multi_level=False, sigma_single=1.0)  # λ = 1/(1 + 1) = 0.5
    imgs = images()
    x = patchify(imgs, 4)
    V = m.pca.components
    spy_net(m, lambda s: x + 2.0 * V[1])  # error 2 along a kept component
    kept = m({"image": imgs}, step_ctx())["loss"]
    spy_net(m, lambda s: x + 2.0 * V[9])  # the same error along a residual component
    resid = m({"image": imgs}, step_ctx())["loss"]
    # λ·Σ w r² / P = 0.5 · (1 · 4) / 16 and 0.5 · (0.1 · 4) / 16
    assert kept.item() == pytest.approx(0.5 * 4 / 16, rel=1e-4)
    assert resid.item() == pytest.approx(0.5 * 0.4 / 16, rel=1e-4)


def test_noise_prediction_targets_the_latent_noise_without_lambda():
    m = make(latent_dim=4, prediction="noise", multi_level=False, sigma_single=0.5)
    imgs = images()
    x = patchify(imgs, 4)
    x_t, noise = m.corrupt(x, torch.full((4,), 0.5), step_ctx().generator)
    seen = spy_net(m, lambda s: noise)
    out = m({"image": imgs}, step_ctx())
    torch.testing.assert_close(patchify(seen["input"], 4), x_t)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(seen["t"], torch.full((4,), 1000 * 0.5 / math.sqrt(2)))


def test_multi_level_sigma_is_uniform_up_to_sqrt2():
    m = make()
    s = m.sample_sigma(20_000, torch.Generator().manual_seed(0))
    assert s.min() >= 0 and s.max() <= math.sqrt(2)
    assert s.mean().item() == pytest.approx(math.sqrt(2) / 2, rel=0.02)


def test_the_probe_t_is_a_t_the_conditioning_was_trained_at():
    assert make(fit=False).probe_t == 10.0  # multi-level: appendix A's t = 10 of 1000
    single = make(fit=False, multi_level=False)
    trained_t = float(single.timestep(single.sample_sigma(1, torch.Generator().manual_seed(0)))[0])
    assert single.probe_t == pytest.approx(trained_t) and trained_t == pytest.approx(1000 / math.sqrt(6))
    assert make(fit=False, multi_level=False, probe_t=25).probe_t == 25  # a given t is kept
    m = make(multi_level=False).eval()
    imgs = images()
    with torch.no_grad():
        want = m.net.encode(imgs, torch.tensor(trained_t))[:, 1:].mean(dim=1)
        torch.testing.assert_close(m.features(imgs)["mean"], want)


def test_train_steps_reduce_the_loss_on_a_fixed_batch():
    m = make().train()
    losses = assert_trains_every_parameter(m, lambda: {"image": images(8)}, steps=6)
    assert losses[-1] < losses[0]
    assert m.pca.components.grad is None and not m.pca.components.requires_grad


def test_reconstruct_panels_and_eval_encoder_matches_features():
    m = make().eval()
    imgs = images()
    panels = m.reconstruct(imgs, torch.Generator().manual_seed(0))
    assert list(panels) == ["input", "corrupted", "reconstruction", "pca"]
    assert all(v.shape == imgs.shape for v in panels.values())
    assert not torch.allclose(panels["corrupted"], panels["pca"])
    with torch.no_grad():
        feats = m.features(imgs)
        plain = m.eval_encoder().features(imgs)
    for k in ("cls", "mean"):
        torch.testing.assert_close(feats[k], plain[k], atol=1e-5, rtol=1e-4)


def test_pca_basis_is_fitted_once_saved_and_carried_through_resume(tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "ldae", *TINY, "--epochs", "2", "--out", str(run)]
    assert main([*args, "--max-steps", "2"]) == 0
    _, a = load_run(run)
    assert bool(a.pca.fitted)
    from byon.data import channel_stats, load_dataset

    data = load_dataset("synthetic", "train", subset=64, seed=0)
    mean, std = channel_stats(data.images)
    ref = make(fit=False).pca.fit_images(data.images, mean, std, 4)
    torch.testing.assert_close(a.pca.components, ref.components)
    torch.testing.assert_close(a.pca.mean, ref.mean)
    assert (run / "ldae_pca.json").is_file()
    import json

    assert json.loads((run / "summary.json").read_text())["resolved"] == {"latent_dim": 4, "probe_t": 10.0}

    def refit(self, data):
        raise AssertionError("setup_data must not run on resume")

    monkeypatch.setattr(LDAE, "setup_data", refit)
    assert main([*args, "--resume", "auto"]) == 0
    _, b = load_run(run)
    assert torch.equal(a.pca.components, b.pca.components) and torch.equal(a.pca.variance, b.pca.variance)
