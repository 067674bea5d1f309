import pytest
import torch

from byon.corruption.diffusion import edm_precondition, edm_weight
from byon.corruption.patches import patchify
from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.context import StepContext
from byon.methods.ddae import DDAE
from byon.nn.ema import ema_update

from .common import make_method, rand_images, step_ctx


def make(seed: int = 0, **ddae) -> DDAE:
    return make_method("ddae", seed, **ddae)


def images(B: int = 4) -> torch.Tensor:
    return rand_images(B, seed=1)


def test_registered_recipe_and_schedule():
    assert METHODS["ddae"] is DDAE
    cfg = load_config("configs/ddae/paper.yaml", {"model": {"preset": "vit-test"}})
    assert cfg.optim.blr == 2e-4 and cfg.optim.weight_decay == 0.0 and cfg.optim.grad_clip == 1.0
    m = make()
    ab = m.diffusion.alphas_cumprod
    assert ab[0].item() == pytest.approx(1 - 1e-4)
    assert ab[-1].item() == pytest.approx(torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).item(),
                                          rel=1e-3)
    # DDAE's probe t = 11 of 1…T (10 here) is σ ≈ 0.05 in EDM's terms
    assert m.sigma_of_t(torch.tensor([10])).item() == pytest.approx(0.047, abs=2e-3)
    assert m.feature_block == 2 and m.num_layers == 4  # vit-test: 2 encoder + 2 decoder blocks
    assert m.resolved() == {"feature_block": 2, "feature_t": 10}  # what summary.json and the bench record keep
    assert make(feature_block=3).resolved()["feature_block"] == 3


def test_ddpm_loss_is_the_eps_mse():
    m = make()
    seen = {}
    fwd = m.net.forward

    def spy(x, t):
        seen["x"], seen["t"], seen["out"] = x, t, fwd(x, t)
        return seen["out"]

    m.net.forward = spy
    imgs = images()
    out = m({"image": imgs}, step_ctx())
    g = step_ctx().generator
    eps = torch.randn(imgs.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    assert torch.equal(seen["t"], t)
    x_t = m.diffusion.sqrt_ab[t].view(-1, 1, 1, 1) * 0.5 * imgs + m.diffusion.sqrt_1mab[t].view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(seen["x"], x_t)
    torch.testing.assert_close(out["loss"], (seen["out"] - patchify(eps, 4)).pow(2).mean())


def test_edm_loss_is_lambda_weighted_on_the_preconditioned_denoiser():
    m = make(objective="edm")
    F = torch.randn(4, 49, 16, generator=torch.Generator().manual_seed(5))
    m.net.forward = lambda x, c: F
    imgs = images()
    out = m({"image": imgs}, step_ctx())
    g = step_ctx().generator
    eps = torch.randn(imgs.shape, generator=g)
    sigma = (torch.randn(4, generator=g) * 1.2 - 1.2).exp()
    y = 0.5 * imgs
    c_skip, c_out, _, _ = (c.view(-1, 1, 1, 1) for c in edm_precondition(sigma, 0.5))
    from byon.corruption.patches import unpatchify

    D = c_skip * (y + sigma.view(-1, 1, 1, 1) * eps) + c_out * unpatchify(F, 4, 1)
    ref = (edm_weight(sigma, 0.5) * (D - y).pow(2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(out["loss"], ref)


@pytest.mark.parametrize("objective", ["ddpm", "edm"])
def test_one_train_step_and_the_ema(objective):
    m = make(objective=objective).train()
    assert not m.ema.training and all(not p.requires_grad for p in m.ema.parameters())
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    out = m({"image": images(8)}, step_ctx())
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"]) and m.net.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert m.ema_pairs() == [(m.net, m.ema)]
    before = m.ema.encoder.blocks[0].attn.qkv.weight.clone()
    online = m.net.encoder.blocks[0].attn.qkv.weight
    assert not torch.equal(before, online)
    ema_update(m.ema_pairs(), 0.999)
    torch.testing.assert_close(m.ema.encoder.blocks[0].attn.qkv.weight, 0.999 * before + 0.001 * online)


def test_ema_decay_warms_up_as_ema_pytorch():
    """DDAE's ema_pytorch.EMA(beta, update_after_step=0, update_every=1): update k decays by
    min(β, 1 − (1 + k)^(−2/3)), so the first update copies the online net; the engine passes step k + 1."""
    m = make().train()
    assert m.cfg.ema_decay == 0.9999 and load_config("configs/ddae/paper.yaml").method_cfg.ema_decay == 0.9999
    total = 1872  # fmnist-cpu: 8 epochs of 234 steps
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    out = m({"image": images(8)}, StepContext(generator=torch.Generator().manual_seed(0), total_steps=total))
    out["loss"].backward()
    opt.step()
    decay = [m.ema_momentum(k + 1, total) for k in range(total)]
    assert decay[0] == 0.0 and decay[1] == pytest.approx(1 - 2 ** (-2 / 3)) and decay[9] == pytest.approx(
        1 - 10 ** (-2 / 3))
    assert decay[-1] == pytest.approx(0.99342, abs=1e-5) and all(a < b for a, b in zip(decay, decay[1:]))
    ema_update(m.ema_pairs(), decay[0])  # update 0: the random init leaves no trace
    for online, ema in zip(m.net.parameters(), m.ema.parameters()):
        assert torch.equal(online, ema)
    capped = make(ema_decay=0.999)  # 1 − (1 + k)^(−2/3) passes 0.999 at k ≈ 31,622
    assert capped.ema_momentum(100_000, 100_000) == 0.999
    assert capped.ema_momentum(10, 100_000) == pytest.approx(1 - 10 ** (-2 / 3))


def test_layer_features_use_fresh_noise_and_the_ema():
    m = make().eval()
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)  # the online net differs from the EMA: features must not see it
    imgs, t = images(), torch.full((4,), 50)
    g = torch.Generator().manual_seed(0)
    a, b = m.layer_features(imgs, t, g), m.layer_features(imgs, t, g)
    assert len(a) == 4 and all(f.shape == (4, 32) for f in a)
    assert not torch.allclose(a[0], b[0])  # fresh noise per call
    again = m.layer_features(imgs, t, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    x, c = m.net_input(imgs, t, torch.Generator().manual_seed(0))
    ref = m.ema.block_outputs(x, c)[0][:, 1:].mean(1)
    torch.testing.assert_close(a[0], ref)
    clean = m.layer_features(imgs, None, g)
    assert all(torch.equal(x, y) for x, y in zip(clean, m.layer_features(imgs, None, g)))
    with pytest.raises(ByonError, match="0…999"):
        m.layer_features(imgs, torch.full((4,), 1000), g)


@pytest.mark.parametrize(("objective", "block"), [("ddpm", 1), ("edm", 1), ("ddpm", 3), ("edm", 4)])
def test_eval_encoder_is_the_truncated_ema_network_on_clean_input(objective, block):
    m = make(objective=objective, feature_block=block, feature_noise=False).eval()
    with torch.no_grad():  # leave adaLN-Zero's identity start, so the decoder blocks' folding is exercised
        for p in m.ema.parameters():
            p.add_(0.02 * torch.randn_like(p))
    imgs = images()
    with torch.no_grad():
        feats = m.features(imgs)
        enc = m.eval_encoder()
        _, inter, _ = enc.forward_tokens(enc.embed(imgs), return_layers=[block - 1], norm=False)
    assert len(enc.blocks) == block  # blocks 3, 4 lie in vit-test's decoder half (2 + 2 blocks)
    torch.testing.assert_close(inter[block - 1][:, 1:].mean(1), feats["mean"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(inter[block - 1][:, 0], feats["cls"], atol=1e-5, rtol=1e-4)


def test_eval_encoder_of_the_mae_split_stays_in_its_encoder():
    with pytest.raises(ByonError, match="'mae' split's decoder, which is no plain ViT"):
        make(split="mae", feature_block=3).eval_encoder()
    assert len(make(split="mae", feature_block=2).eval_encoder().blocks) == 2
    with pytest.raises(ByonError, match="does not exist"):
        make(feature_block=5)


def probe_noise(m: DDAE, imgs: torch.Tensor) -> torch.Tensor:
    """The noise map ε (B, C, H, W) of one `features` call, read back from the DDPM network input."""
    seen, net_input = {}, m.net_input

    def spy(x, t, g):
        seen["x"], seen["t"] = net_input(x, t, g)
        return seen["x"], seen["t"]

    m.net_input = spy
    m.features(imgs)
    ab = m.diffusion.sqrt_ab[seen["t"]].view(-1, 1, 1, 1)
    return (seen["x"] - ab * 0.5 * imgs) / m.diffusion.sqrt_1mab[seen["t"]].view(-1, 1, 1, 1)


def test_noisy_features_repeat_for_a_fresh_load():
    a, b = make(), make()
    imgs = images()
    fa, fb = a.features(imgs), b.features(imgs)
    assert torch.equal(fa["mean"], fb["mean"])
    assert not torch.equal(a.features(imgs)["mean"], fa["mean"])  # the next batch gets new noise


def test_different_batches_of_fresh_loads_draw_different_probe_noise():
    """Each split's extraction loads the run afresh: its batch k must not reuse another split's noise map."""
    train, test = images(), rand_images(4, seed=2)
    eps = probe_noise(make(), train)
    assert abs(eps.std().item() - 1) < 0.1
    assert torch.equal(probe_noise(make(), train), eps)  # same images, same noise
    assert (probe_noise(make(), test) - eps).abs().mean() > 0.5


@pytest.mark.parametrize("objective,sampler", [("ddpm", "ddim"), ("edm", "heun"), ("edm", "ddim")])
def test_sampling_shapes_and_seed_determinism(objective, sampler):
    m = make(objective=objective).eval()
    run = lambda seed: m.sample(3, torch.Generator().manual_seed(seed), sampler=sampler, steps=4)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (3, 1, 28, 28) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    if objective == "ddpm":  # DDIM clips x̂_0 to the pixel range [0, 1]
        pixels = a * 0.25 + 0.5
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_heun_needs_an_edm_run():
    with pytest.raises(ByonError, match="EDM-trained"):
        make().sample(2, torch.Generator().manual_seed(0), sampler="heun", steps=2)
