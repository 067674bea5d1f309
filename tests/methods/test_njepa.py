
import pytest
import torch
import torch.nn.functional as F

from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.ijepa import IJEPA
from byon.methods.njepa import NJEPA

from .common import CONFIGS, INFO, TINY, check_step, make_method, method_from, pretrain_knn, rand_batch, step_ctx

# paper.yaml, imagenet.yaml: the recipes
VARIANTS = sorted(p for p in (CONFIGS / "njepa").rglob("*.yaml") if p.stem not in ("paper", "imagenet"))


def make(seed: int = 0, **njepa) -> NJEPA:
    return make_method("njepa", seed, **njepa).train()


def test_registered_with_the_papers_best_weights_and_ijepas_recipe():
    assert METHODS["njepa"] is NJEPA and NJEPA.default_feature == "mean"
    cfg = load_config(CONFIGS / "njepa" / "paper.yaml", TINY)
    c = cfg.method_cfg
    assert (c.w_nt, c.w_nc, c.noise, c.predictors, c.mask_tokens) == (0.1, 0.1, "multi", "unshared", "unshared")
    assert (c.p_mean, c.p_std) == (-1.2, 1.2)
    assert (cfg.optim.weight_decay, cfg.optim.weight_decay_end) == (0.04, 0.4)
    m = make()
    assert m.ema_momentum(0, 1) == pytest.approx(0.996) and m.ema_momentum(1, 1) == pytest.approx(1.0)
    assert m.eval_encoder() is m.target_encoder


def test_multi_level_noise_is_one_lognormal_sigma_per_block():
    m = make()
    B, M, K = 2048, 4, 6
    sigma, noise = m.position_noise(B, M, K, torch.Generator().manual_seed(0))
    assert sigma.shape == (B, M) and noise.shape == (B, M, K, m.predictor.dim)
    log = sigma.log()
    assert abs(log.mean().item() + 1.2) < 0.05 and abs(log.std().item() - 1.2) < 0.05
    assert (sigma[:, 0] != sigma[:, 1]).all()  # a separate level for every block
    eps = noise / sigma[..., None, None]  # the unit Gaussian under each block's σ
    assert abs(eps.mean().item()) < 0.01 and abs(eps.std().item() - 1.0) < 0.01
    # within one block the noise scale is that block's σ
    per_block = noise.flatten(2).std(dim=-1) / sigma
    assert abs(per_block.mean().item() - 1.0) < 0.02


def test_single_level_noise_shares_sigma_across_an_images_blocks():
    m = make(noise="single")
    sigma, noise = m.position_noise(512, 4, 6, torch.Generator().manual_seed(0))
    assert (sigma == sigma[:, :1]).all() and sigma[:, 0].unique().numel() == 512
    assert abs(sigma[:, 0].log().mean().item() + 1.2) < 0.15
    assert not torch.equal(noise[:, 0], noise[:, 1])  # fresh ε per block, one σ


def test_loss_is_ct_plus_weighted_nt_and_nc():
    m = make(w_nt=0.3, w_nc=0.7)
    b = rand_batch()
    seen = {}
    for name in ("predictor", "noisy_predictor"):
        orig = getattr(m, name).forward

        def spy(*a, _orig=orig, _name=name, **k):
            seen[_name] = (_orig(*a, **k), k.get("pos_noise"))
            return seen[_name][0]

        getattr(m, name).forward = spy
    out = m(b, step_ctx())
    g = torch.Generator().manual_seed(0)
    masks = m.masks.sample(4, g)
    B, M, K = masks.targets.shape
    sigma, noise = m.position_noise(B, M, K, g)  # the next draws after the masks, as in forward
    assert seen["predictor"][1] is None
    torch.testing.assert_close(seen["noisy_predictor"][1], noise)
    h = m.targets(b["image"], masks)
    clean, noisy = seen["predictor"][0], seen["noisy_predictor"][0]
    ct, nt, nc = F.smooth_l1_loss(clean, h), F.smooth_l1_loss(noisy, h), F.mse_loss(noisy, clean)
    torch.testing.assert_close(out["loss"], ct + 0.3 * nt + 0.7 * nc)
    torch.testing.assert_close(torch.stack([out["ct"], out["nt"], out["nc"]]), torch.stack([ct, nt, nc]).detach())
    torch.testing.assert_close(out["log_sigma"], sigma.log().mean())


def test_noise_reaches_only_the_noisy_predictor():
    """The clean prediction (C-T) is the same as I-JEPA's with the same weights and draws."""
    n = make()
    i = IJEPA(load_config(None, {"method": "ijepa", **TINY}).method_cfg, n.shape, INFO).train()
    i.load_state_dict(n.state_dict(), strict=False)
    torch.testing.assert_close(n(rand_batch(), step_ctx())["ct"], i(rand_batch(), step_ctx())["loss"].detach())


@pytest.mark.parametrize("predictors,mask_tokens", [("unshared", "unshared"), ("unshared", "shared"),
                                                     ("shared", "unshared"), ("shared", "shared")])
def test_sharing_options_use_every_parameter(predictors, mask_tokens):
    m = make(predictors=predictors, mask_tokens=mask_tokens)
    has_noisy = hasattr(m, "noisy_predictor")
    assert has_noisy == (predictors == "unshared")
    tokens = [n for n, _ in m.named_parameters() if n.endswith("mask_token")]
    assert len(tokens) == (2 if mask_tokens == "unshared" else 1)
    check_step(m, m(rand_batch(), step_ctx()))


@pytest.mark.parametrize("predictors", ["unshared", "shared"])
def test_every_mask_token_is_undecayed(predictors):
    from byon.engine.optim import param_groups

    m = make(predictors=predictors)
    decay, no_decay = param_groups(m, 0.04)
    names = {id(p): n for n, p in m.named_parameters()}
    tokens = {n for n in names.values() if n.endswith("mask_token")}
    assert len(tokens) == 2  # the clean predictor's and the noisy branch's
    assert tokens <= {names[id(p)] for p in no_decay["params"]}
    assert not tokens & {names[id(p)] for p in decay["params"]}
    if predictors == "shared":  # the noisy token is the method's own parameter
        assert "noisy_mask_token" in tokens and m.no_weight_decay() == {"noisy_mask_token"}


def test_ct_only_builds_no_noisy_branch():
    m = make(w_nt=0.0, w_nc=0.0)
    assert not hasattr(m, "noisy_predictor") and not hasattr(m, "noisy_mask_token")
    out = m(rand_batch(), step_ctx())
    assert "nt" not in out and "nc" not in out and out["loss"].requires_grad
    torch.testing.assert_close(out["loss"].detach(), out["ct"])


def test_nc_stop_grad_keeps_nc_out_of_the_clean_predictor():
    m = make(w_nt=0.0, w_nc=1.0, nc_stop_grad=True)
    masks = m.masks.sample(4, torch.Generator().manual_seed(0))
    z = m.encode_context(rand_batch()["image"], masks).detach()
    clean = m.predictor(z, masks.context, masks.targets)
    _, noise = m.position_noise(4, 4, masks.targets.shape[2], torch.Generator().manual_seed(1))
    noisy = m.noisy_predict(z, masks.context, masks.targets, noise)
    F.mse_loss(noisy, clean.detach()).backward()
    assert m.predictor.predictor_proj.weight.grad is None
    assert m.noisy_predictor.predictor_proj.weight.grad is not None


def test_bad_options_are_one_line_errors():
    with pytest.raises(ByonError, match="did you mean 'multi'"):
        make(noise="mult")
    with pytest.raises(ByonError, match="njepa.w_nt and njepa.w_nc must be ≥ 0"):
        make(w_nt=-1.0)


@pytest.mark.parametrize("path", VARIANTS, ids=[f"{p.parent.name}/{p.stem}" for p in VARIANTS])
def test_paper_configs_train_one_step(path):
    m = method_from(load_config(path, TINY)).train()
    check_step(m, m(rand_batch(), step_ctx()))  # a finite loss reaching every parameter


def test_tiny_pretrain_and_knn_eval(tmp_path, tiny_overrides):
    res = pretrain_knn("njepa", tmp_path, tiny_overrides)
    assert res["method"] == "njepa" and 0.0 <= res["top1"] <= 100.0
