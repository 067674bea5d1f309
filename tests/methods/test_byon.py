import json

import pytest
import torch

from byon.analysis import ian_timesteps
from byon.corruption.patches import norm_pix
from byon.errors import ByonError
from byon.methods import METHODS, load_config
from byon.methods.byon import BYON
from byon.nn.ema import ema_update

from .common import (
    CONFIGS,
    TINY,
    assert_trains_every_parameter,
    check_step,
    make_method,
    method_from,
    rand_batch,
    step_ctx,
)

BYON_CONFIGS = CONFIGS / "byon"
TABLE1 = sorted((BYON_CONFIGS / "ablation").glob("*.yaml"))


def make(seed: int = 0, **byon) -> BYON:
    return make_method("byon", seed, **byon)


def twin(full: BYON, **byon) -> BYON:
    """A model with some switch changed and every shared weight copied from `full`."""
    m = make(seed=1, **byon)
    m.load_state_dict(full.state_dict(), strict=False)
    return m


def test_registered_and_recipe_is_maes():
    assert METHODS["byon"] is BYON
    cfg = load_config(BYON_CONFIGS / "paper.yaml", TINY)  # the spec's reading: the built-in recipe, MAE's
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05 and cfg.optim.blr == 1.5e-4
    tuned = load_config(BYON_CONFIGS / "default.yaml", TINY)  # the val-chosen reading moves only the base lr
    assert tuned.optim.betas == (0.9, 0.95) and tuned.optim.weight_decay == 0.05
    # ... to its val step's winner (benchmarks/results/tune/fmnist-cpu/byon-lr.md)
    winner = json.loads((CONFIGS.parent / "benchmarks/results/tune/fmnist-cpu/byon-lr-winner.json").read_text())
    assert tuned.optim.blr == float(dict(s.split("=", 1) for s in winner["sets"])["optim.blr"])
    # read-out: the spec's full-sequence encoder → CLS; the default's MAE-style encoder → mean of the patch tokens
    assert make().default_feature == "cls" and make(encoder_tokens="visible").default_feature == "mean"
    assert method_from(tuned).default_feature == "mean"


@pytest.mark.parametrize("path", TABLE1, ids=[p.stem for p in TABLE1])
def test_table1_config_trains_one_step(path):
    cfg = load_config(path, TINY)
    model = method_from(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(rand_batch(), step_ctx())
    check_step(model, out)  # DDP without find_unused_parameters stays happy
    opt.step()
    pairs = model.ema_pairs()
    assert len(pairs) == (2 if cfg.method_cfg.contrastive else 0)
    ema_update(pairs, model.ema_momentum(1, 2))
    m = cfg.method_cfg
    terms = {"demask": m.demask, "denoise": m.denoise, "contrastive": m.contrastive}
    assert {k for k in terms if k in out} == {k for k, on in terms.items() if on}


def test_loss_is_demask_plus_weighted_denoise_plus_contrastive():
    model = make()
    out = model(rand_batch(), step_ctx())
    logs = ("demask", "denoise", "contrastive", "delta_u", "eta_mean", "eta_std", "y_mean", "cos", "t_mean")
    assert set(logs) <= set(out)
    torch.testing.assert_close(out["loss"], out["demask"] + 0.1 * out["denoise"] + out["contrastive"])
    model2 = make(lambda_dn=0.5, lambda_con=2.0)
    out2 = model2(rand_batch(), step_ctx())
    torch.testing.assert_close(out2["loss"], out2["demask"] + 0.5 * out2["denoise"] + 2 * out2["contrastive"])


def test_same_generator_same_step():
    model = make()
    a, b = model(rand_batch(), step_ctx(3)), model(rand_batch(), step_ctx(3))
    assert all(torch.equal(a[k], b[k]) for k in ("loss", "demask", "denoise", "contrastive"))


def test_contrastive_off_builds_no_ema_branch_and_keeps_the_other_terms():
    full = make()
    off = twin(full, contrastive=False)
    for name in ("target_encoder", "target_projector", "projector", "predictor"):
        assert getattr(off, name) is None
    assert not any(k.startswith(("target_", "projector", "predictor")) for k in off.state_dict())
    assert off.ema_pairs() == []
    n_full = sum(p.numel() for p in full.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    assert n_off < n_full - sum(p.numel() for p in full.target_encoder.parameters())
    a, b = full(rand_batch(), step_ctx()), off(rand_batch(), step_ctx())
    assert {"contrastive", "delta_u", "cos"}.isdisjoint(b)
    torch.testing.assert_close(b["demask"], a["demask"])
    torch.testing.assert_close(b["denoise"], a["denoise"])
    torch.testing.assert_close(b["loss"], a["demask"] + 0.1 * a["denoise"])


def test_sue_off_sets_delta_u_to_one_and_changes_only_the_contrastive_term():
    full = make()
    off = twin(full, sue=False)
    a, b = full(rand_batch(), step_ctx()), off(rand_batch(), step_ctx())
    assert b["delta_u"].item() == 1.0
    torch.testing.assert_close(b["contrastive"], -b["cos"])
    torch.testing.assert_close(b["demask"], a["demask"])
    torch.testing.assert_close(b["denoise"], a["denoise"])
    torch.testing.assert_close(b["cos"], a["cos"])
    assert a["delta_u"].item() < 1.0  # at init some reconstructions are unreliable


def test_literal_sue_sign_makes_delta_u_one():
    out = make(sue_sign="literal")(rand_batch(), step_ctx())
    assert out["delta_u"].item() == 1.0


def test_ian_off_gives_uniform_t_and_unit_eta():
    full, off = make(), make(ian=False)
    c = off.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
    assert c.ian is None and torch.equal(c.eta, torch.ones(4))
    out = off(rand_batch(), step_ctx())
    assert "y_mean" not in out and out["eta_mean"].item() == 1.0 and out["eta_std"].item() == 0.0
    c_full = full.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
    assert c_full.ian is not None and not torch.equal(c_full.eta, torch.ones(4))


def test_denoise_off_leaves_visible_tokens_clean_and_drops_its_term():
    model = make(denoise=False)
    c = model.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
    assert torch.equal(c.x_t, c.x) and c.eps is None and c.t.eq(0).all()
    out = model(rand_batch(), step_ctx())
    assert {"denoise", "t_mean", "eta_mean", "y_mean"}.isdisjoint(out)
    torch.testing.assert_close(out["loss"], out["demask"] + out["contrastive"])


def test_demask_off_masks_nothing_and_noises_every_token():
    model = make(demask=False)
    assert not hasattr(model, "mask_token")
    c = model.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
    assert not c.m.mask.any()
    assert ((c.x_t - c.x).abs().amax(-1) > 0).all()
    out = model(rand_batch(), step_ctx())
    assert "demask" not in out
    torch.testing.assert_close(out["loss"], 0.1 * out["denoise"] + out["contrastive"])


def test_source_view_is_noised_where_visible_and_clean_where_masked():
    model = make()
    c = model.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
    vis = ~c.m.mask
    assert c.m.mask.sum(1).eq(49 - int(49 * 0.4)).all()  # mask ratio 0.6
    torch.testing.assert_close(c.x_t[vis], model.diffusion.q_sample(c.x, c.t, c.eps, c.eta)[vis])
    assert torch.equal(c.x_t[c.m.mask], c.x[c.m.mask])


def _perturbed(model: BYON, where: str) -> dict:
    c = model.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))  # forward's first draws
    sel = c.m.mask if where == "masked" else ~c.m.mask
    orig = model.decoder.forward
    model.decoder.forward = lambda *a, **k: orig(*a, **k) + 7.0 * sel.unsqueeze(-1)
    try:
        return model(rand_batch(), step_ctx())
    finally:
        model.decoder.forward = orig


def test_demask_ignores_visible_and_denoise_ignores_masked_tokens():
    model = make()
    base = model(rand_batch(), step_ctx())
    vis = _perturbed(model, "visible")
    torch.testing.assert_close(vis["demask"], base["demask"])
    assert vis["denoise"] > base["denoise"]
    msk = _perturbed(model, "masked")
    torch.testing.assert_close(msk["denoise"], base["denoise"])
    assert msk["demask"] > base["demask"]


def test_sue_is_one_for_perfect_reconstructions_in_the_method():
    for kw in ({}, {"denoise": False}, {"demask": False}):
        model = make(**kw)
        c = model.corrupt(rand_batch()["image"], torch.Generator().manual_seed(0))
        target = norm_pix(c.x)
        eps = c.eps if c.eps is not None else torch.zeros_like(c.x)
        torch.testing.assert_close(model.uncertainty(c, target, target, eps), torch.ones(4))
        # a wrong reconstruction on every token drives it to zero
        bad = target + 10.0
        assert model.uncertainty(c, bad, target, eps + 10.0).eq(0).all()


def test_visible_encoder_tokens_and_two_decoders_train():
    model = make(encoder_tokens="visible", decoders="two", decoder_cond="adaln")
    assert model.denoise_decoder is not None and not hasattr(model, "mask_token")
    seen = {}
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.update(L=o.shape[1]))
    out = model(rand_batch(), step_ctx())
    out["loss"].backward()
    assert seen["L"] == 1 + int(49 * 0.4)
    assert model.denoise_decoder.pred.weight.grad is not None and model.decoder.pred.weight.grad is not None


def test_two_views_draws_a_second_augmentation():
    pytest.importorskip("byon.data.transforms")
    model = make(views="two")
    seen = []
    model.target_encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model(rand_batch(), step_ctx())
    assert len(seen) == 1 and not torch.equal(seen[0], rand_batch()["image"])
    seen.clear()
    same = make()
    same.target_encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    same(rand_batch(), step_ctx())
    assert torch.equal(seen[0], rand_batch()["image"])  # views: same → the clean copy of the source view


def test_ema_schedule_and_target_has_no_gradients():
    model = make()
    assert model.ema_momentum(0, 1) == pytest.approx(0.99)
    assert model.ema_momentum(1, 2) == pytest.approx(0.995)
    assert model.ema_momentum(1, 1) == pytest.approx(1.0)
    assert make(ema_base=0.996).ema_momentum(0, 1) == pytest.approx(0.996)
    (enc, tgt), (proj, tproj) = model.ema_pairs()
    assert enc is model.encoder and tgt is model.target_encoder and proj is model.projector
    assert tproj is model.target_projector
    assert not any(p.requires_grad for p in tgt.parameters())
    model.train()
    # the teacher never drops paths; its projector's BatchNorm normalises with batch statistics, as the online one
    assert not tgt.training and model.target_projector.net[1].training and model.encoder.training
    model(rand_batch(), step_ctx())["loss"].backward()
    assert all(p.grad is None for p in tgt.parameters())
    # the EMA encoder is a plain ViTEncoder state dict (exportable like the online one)
    assert set(tgt.state_dict()) == set(enc.state_dict())


def test_eval_uses_the_online_encoder_on_clean_images():
    model = make().eval()
    x = rand_batch()["image"]
    f = model.features(x)
    assert model.eval_encoder() is model.encoder
    torch.testing.assert_close(f["cls"], model.encoder.forward_encoder(x)[:, 0])
    assert "mask_token" in model.no_weight_decay()


def test_timestep_histogram_survives_checkpoints_and_is_written(tmp_path):
    model = make().train()
    model(rand_batch(), step_ctx())
    model(rand_batch(), step_ctx(1))
    assert model.t_hist.sum().item() == 8
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.t_hist, model.t_hist)
    ian_timesteps(fresh, tmp_path)  # what a run's end writes (BYON.run_figures)
    s = json.loads((tmp_path / "byon_summary.json").read_text())
    assert s["total"] == 8 and len(s["hist"]) == 1000 and sum(s["interval_counts"]) == 8
    assert 1 <= len(s["top5"]) <= 5 and s["config"]["ian"] is True
    hist = torch.tensor(s["hist"], dtype=torch.float64)
    assert s["t_mean"] == pytest.approx(float((hist * torch.arange(1000)).sum() / 8))
    assert all(s["hist"][t] > 0 for t in s["top5"])
    assert (tmp_path / "ian_timesteps.png").stat().st_size > 1000
    model.eval()
    model(rand_batch(), step_ctx())
    assert model.t_hist.sum().item() == 8  # only training steps count


@pytest.mark.parametrize("byon, match", [
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"demask": False, "denoise": False, "contrastive": False}, "nothing to learn"),
    ({"demask": False, "denoise": False}, "sue"),
    ({"views": "three"}, "views"),
    ({"t_min": 0.8, "t_max": 0.2}, "t_min"),
    ({"sue_sign": "litteral"}, "sue_sign"),
])
def test_bad_settings_are_user_errors(byon, match):
    with pytest.raises(ByonError, match=match):
        load_config(None, {"method": "byon", **TINY, "byon": byon})


def test_every_sweep_config_loads():
    paths = sorted(BYON_CONFIGS.rglob("*.yaml"))
    assert len(paths) == 3 + 10 + 6 + 4  # default + paper + imagenet, Table 1, Table 6, Table 4
    for p in paths:
        assert load_config(p, TINY).method == "byon"
    ratios = {p.stem: load_config(p).method_cfg for p in (BYON_CONFIGS / "mask_ratio").glob("*.yaml")}
    assert ratios["r050_noian"].mask_ratio == 0.5 and not ratios["r050_noian"].ian and ratios["r070_ian"].ian
    lams = {p.stem: load_config(p).method_cfg.lambda_ian for p in (BYON_CONFIGS / "lambda_ian").glob("*.yaml")}
    assert lams == {"l0": 0.0, "l01": 0.1, "l05": 0.5, "l1": 1.0}


def test_a_few_steps_reduce_the_reconstruction_losses():
    model = make().train()
    rec = []

    def after_step(out: dict) -> None:
        ema_update(model.ema_pairs(), 0.99)
        rec.append(float(out["demask"] + 0.1 * out["denoise"]))

    assert_trains_every_parameter(model, lambda: rand_batch(4), after_step=after_step)
    assert rec[-1] < rec[0]


def test_views_two_draws_the_reference_with_the_runs_data_settings(tmp_path, monkeypatch, tiny_overrides):
    """Both views, the source and BYON's second (reference) one, use the run's data.crop_scale."""
    import byon.data.transforms as transforms
    from byon.engine.run import train
    from byon.methods import build_config

    scales = []
    real = transforms.random_resized_crop
    monkeypatch.setattr(transforms, "random_resized_crop",
                        lambda x, scale, *a, **k: scales.append(tuple(scale)) or real(x, scale, *a, **k))
    over = tiny_overrides | {"method": "byon", "byon": {"views": "two"},
                             "data": tiny_overrides["data"] | {"crop_scale": [0.3, 0.4]}}
    over["train"] = over["train"] | {"max_steps": 1}
    train(build_config(over), tmp_path / "run")
    # the FLOP count draws the reference view once, the training step both views
    assert scales == [(0.3, 0.4)] * 3
    torch.manual_seed(0)
    model = make(views="two")
    scales.clear()
    model(rand_batch(), step_ctx(data=build_config(over).data))
    assert scales == [(0.3, 0.4)]  # rand_batch's "image" is the source view; the reference is drawn here
