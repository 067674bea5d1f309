import json

import pytest
import torch

from byon.analysis.reconstructions import reconstructions, supporting_methods
from byon.cli import main
from byon.corruption.patches import norm_pix, patchify, unpatchify
from byon.data import DataInfo
from byon.methods import METHODS, load_config
from byon.methods.mae import MAE
from byon.nn.vit import resolve_shape

INFO = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))


def make(method: str, **section):
    cfg = load_config(None, {"method": method, "model": {"preset": "vit-test"}, method: section})
    torch.manual_seed(0)
    return METHODS[method](cfg.method_cfg, resolve_shape(cfg.model, 28, 1), INFO).eval()


def patches_zero(x: torch.Tensor) -> torch.Tensor:
    """(B, N) True where the whole 4×4 patch of (B, 1, 28, 28) x is 0."""
    return (patchify(x, 4) == 0).all(dim=-1)


def test_mae_reconstruct_pastes_visible_patches_and_undoes_norm_pix(monkeypatch):
    mae = make("mae")
    x = torch.randn(3, 1, 28, 28)
    # a perfect decoder (the norm-pix targets) gives the input back exactly where it is masked too
    monkeypatch.setattr(mae.decoder, "forward", lambda latent, ids_restore: norm_pix(patchify(x, 4)))
    out = mae.reconstruct(x, torch.Generator().manual_seed(0))
    assert list(out) == ["input", "corrupted", "reconstruction", "prediction"]
    assert all(v.shape == x.shape for v in out.values())
    masked = patches_zero(out["corrupted"])
    assert (masked.sum(dim=1) == 49 - 12).all()  # keeps int(49·0.25) = 12 of 49
    torch.testing.assert_close(out["reconstruction"], x, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["prediction"], x, atol=1e-4, rtol=0)


def test_mae_reconstruct_keeps_visible_patches_exactly():
    mae = make("mae", norm_pix=False)
    x = torch.randn(2, 1, 28, 28)
    out = mae.reconstruct(x, torch.Generator().manual_seed(1))
    visible = ~patches_zero(out["corrupted"])
    assert torch.equal(patchify(out["reconstruction"], 4)[visible], patchify(x, 4)[visible])
    assert not torch.equal(out["reconstruction"], x)


@pytest.mark.parametrize("switches", [{}, {"denoise": False}, {"demask": False}])
def test_byon_reconstruct_panels(switches):
    byon = make("byon", **switches)
    x = torch.randn(2, 1, 28, 28)
    out = byon.reconstruct(x, torch.Generator().manual_seed(0))
    expected = ["input", "corrupted"] + ["denoised"] * byon.cfg.denoise + ["demasked"] * byon.cfg.demask
    assert list(out) == expected + ["reconstruction"]
    assert all(v.shape == x.shape and torch.isfinite(v).all() for v in out.values())
    masked = patches_zero(out["corrupted"])
    assert (masked.sum(dim=1) == (49 - 19 if byon.cfg.demask else 0)).all()  # keeps int(49·0.4) = 19
    if byon.cfg.demask:
        assert torch.equal(patches_zero(out["demasked"]), ~masked)
    if not byon.cfg.denoise:  # visible patches are clean and pasted as they are
        assert torch.equal(patchify(out["reconstruction"], 4)[~masked], patchify(x, 4)[~masked])


def test_reconstructions_of_runs(mae_run, byon_run, tmp_path, png_ok):
    for run, panels in ((mae_run, 4), (byon_run, 5)):
        res = reconstructions(run, n=3, out=tmp_path / run.name)
        assert png_ok(tmp_path / run.name / "reconstructions.png")
        stored = json.loads((tmp_path / run.name / "reconstructions.json").read_text())
        assert stored["n"] == 3 and len(stored["panels"]) == panels and stored["panels"][0] == "input"
        assert stored["mse_to_input"]["input"] == 0
        assert all(0 < stored["mse_to_input"][k] < 1e3 for k in ("corrupted", "reconstruction"))
        assert res["panels"] == stored["panels"]


def test_methods_without_the_hook_are_named_in_the_error(mae_run, monkeypatch, capsys):
    monkeypatch.delattr(MAE, "reconstruct")
    assert "byon" in supporting_methods() and "mae" not in supporting_methods()
    assert main(["analyze", "reconstructions", "--run", str(mae_run), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'reconstruct' hook (needed for reconstructions)" in err and len(err.splitlines()) == 1
    listed = err.split(";")[1].removeprefix(" use a run of ").split(", ")  # the methods that have it
    assert "byon" in listed and "mae" not in listed


@pytest.mark.parametrize("method", ["mae", "byon", "ldae", "simmim", "fnmim", "diffmae", "maskdit"])
def test_every_reconstruction_method_has_the_hook_with_finite_panels(method):
    assert method in supporting_methods()
    m = make(method)
    if method == "ldae":  # the PCA tokenizer needs its fit
        from byon.data.imagedata import ImageData

        m.setup_data(ImageData(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), None, [], "synthetic"))
    x = torch.randn(2, 1, 28, 28)
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    assert list(out)[:2] == ["input", "corrupted"] and "reconstruction" in out
    assert all(v.shape == x.shape and torch.isfinite(v).all() for v in out.values())
    again = m.reconstruct(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[k], again[k]) for k in out)  # the generator decides every draw


def visible_exact(out: dict, x: torch.Tensor, visible: torch.Tensor) -> bool:
    return torch.equal(patchify(out["reconstruction"], 4)[visible], patchify(x, 4)[visible])


def test_simmim_reconstruct_masks_its_ratio_and_pastes_the_rest(monkeypatch):
    m = make("simmim")
    x = torch.randn(2, 1, 28, 28)
    monkeypatch.setattr(m.head, "forward", lambda h: patchify(x, 4))  # a perfect head
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    masked = patches_zero(out["corrupted"])
    assert (masked.sum(dim=1) == 49 - 19).all()  # keeps int(49 · 0.4) = 19 one-token mask-patches
    torch.testing.assert_close(out["reconstruction"], x)
    monkeypatch.undo()
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    assert visible_exact(out, x, ~masked) and not torch.equal(out["reconstruction"], x)


def test_fnmim_reconstruct_predicts_masked_and_noised_patches():
    m = make("fnmim")
    x = torch.randn(2, 1, 28, 28)
    o = m.predict(x, torch.Generator().manual_seed(0))
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    assert torch.equal(patches_zero(out["corrupted"]), o["masked"])  # feature noise does not show in pixels
    clean = ~(o["masked"] | o["noised"])
    assert visible_exact(out, x, clean)
    got = patchify(out["reconstruction"], 4)
    assert torch.equal(got[o["noised"]], o["pred"][o["noised"]])  # noised patches are predictions, not pasted
    pixel = make("fnmim", inject="pixel").reconstruct(x, torch.Generator().manual_seed(0))
    noised = make("fnmim", inject="pixel").predict(x, torch.Generator().manual_seed(0))["noised"]
    assert not torch.equal(patchify(pixel["corrupted"], 4)[noised], patchify(x, 4)[noised])


def test_diffmae_reconstruct_shows_noised_masked_patches_and_pastes_visible_ones():
    m = make("diffmae")
    x = torch.randn(2, 1, 28, 28)
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    same = (patchify(out["corrupted"], 4) == patchify(x, 4)).all(dim=-1)  # visible: clean
    assert (same.sum(dim=1) == 12).all()  # int(49 · 0.25) visible, the 37 masked ones noised at t = T/2
    assert visible_exact(out, x, same)


def test_maskdit_reconstruct_is_the_denoiser_at_every_patch():
    m = make("maskdit")
    x = torch.randn(2, 1, 28, 28)
    out = m.reconstruct(x, torch.Generator().manual_seed(0))
    assert torch.equal(out["reconstruction"], out["prediction"])
    masked = patches_zero(out["corrupted"])
    assert (masked.sum(dim=1) == 49 - 24).all()  # keeps int(49 · 0.5) = 24 noisy tokens
    D_x, _, _, _, sigma = m.denoise(x, torch.Generator().manual_seed(0), sigma=0.3)
    torch.testing.assert_close(out["prediction"], unpatchify(D_x / 0.5, 4, 1), atol=0.05, rtol=0)
