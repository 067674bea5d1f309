import json
import math

import pytest
import torch
import torch.nn.functional as F

from byon.analysis.alignment import align_uniform, alignment, encoder_layer_features, uniformity
from byon.cli import main
from byon.errors import ByonError
from byon.methods.mae import MAE
from byon.nn.vit import ViTEncoder
from byon.rundir import load_run


def test_alignment_by_hand():
    f = F.normalize(torch.randn(5, 8), dim=-1)
    assert alignment(f, f) == 0.0
    assert alignment(f, -f) == pytest.approx(4.0)
    e = torch.eye(2)
    assert alignment(e, e.flip(0)) == pytest.approx(2.0)  # orthogonal pairs: ‖a − b‖² = 2


def test_uniformity_by_hand():
    e = torch.eye(2)
    assert uniformity(torch.cat([e[:1], -e[:1]])) == pytest.approx(-8.0)  # antipodal: log e^(−2·4)
    assert uniformity(torch.ones(4, 3) / math.sqrt(3)) == pytest.approx(0.0)  # collapse
    # the 3 pairs of an orthonormal triple are all at ‖a − b‖² = 2
    assert uniformity(torch.eye(3)) == pytest.approx(-4.0)
    with pytest.raises(ByonError, match="two images"):
        uniformity(e[:1])


def test_encoder_layer_features_are_block_outputs_pooled(mae_run):
    _, method = load_run(mae_run)
    enc = method.encoder
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        feats = encoder_layer_features(enc, x)
        h = enc.embed(x)
        for blk, f in zip(enc.blocks, feats):
            h = blk(h)
            torch.testing.assert_close(f, h[:, 1:].mean(dim=1))
    assert len(feats) == 2 and feats[0].shape == (3, 32)
    no_cls = ViTEncoder(enc.shape, class_token=False)  # as I-JEPA's: every token is a patch
    with torch.no_grad():
        _, inter, _ = no_cls.forward_tokens(no_cls.embed(x), return_layers=(1,), norm=False)
        torch.testing.assert_close(encoder_layer_features(no_cls, x)[1], inter[1].mean(dim=1))


def check_layers(res: dict, depth: int = 2) -> None:
    assert [li["layer"] for li in res["layers"]] == list(range(1, depth + 1))
    for li in res["layers"]:
        assert 0 <= li["alignment"] <= 4 and -8 <= li["uniformity"] <= 0


def test_noise_pairs_are_the_default_for_byon(byon_run, tmp_path, png_ok):
    res = align_uniform(byon_run, n=20, batch_size=8, out=tmp_path / "au.json")
    assert png_ok(tmp_path / "au.png")
    stored = json.loads((tmp_path / "au.json").read_text())
    assert stored["pairs"] == "noise" and stored["noise"]["t"] == 100 and stored["n"] == 20
    assert 0 < stored["noise"]["noise_scale"] < 1
    check_layers(stored)
    # at the last timestep the two noisings are further apart than at t = 100
    high = align_uniform(byon_run, t=999, n=20, out=tmp_path)
    assert all(a["alignment"] < b["alignment"] for a, b in zip(stored["layers"], high["layers"]))
    assert res["layers"] == stored["layers"]


def test_views_are_the_default_for_mae_and_sigma_noise_works(mae_run, tmp_path):
    res = align_uniform(mae_run, n=16, out=tmp_path)
    assert res["pairs"] == "views" and res["noise"] == {}
    check_layers(res)
    zero = align_uniform(mae_run, pairs="noise", sigma=0.0, n=16, out=tmp_path)
    assert zero["noise"] == {"sigma": 0.0}
    assert all(li["alignment"] == pytest.approx(0.0, abs=1e-9) for li in zero["layers"])  # identical inputs


def test_a_layer_features_hook_replaces_the_default(mae_run, tmp_path, monkeypatch):
    seen = []

    def layer_features(self, images, t, generator):
        seen.append(None if t is None else t.tolist())
        return [images.flatten(1)[:, :4] * 0 + 1] * 3  # three layers, every image the same feature

    monkeypatch.setattr(MAE, "layer_features", layer_features, raising=False)
    res = align_uniform(mae_run, n=6, t=7, out=tmp_path)
    assert res["pairs"] == "noise" and res["features"].startswith("method.layer_features")
    assert seen == [[7] * 6, [7] * 6]
    assert len(res["layers"]) == 3
    assert all(li["alignment"] == 0 and li["uniformity"] == pytest.approx(0.0) for li in res["layers"])
    with pytest.raises(ByonError, match="use --t"):
        align_uniform(mae_run, n=6, sigma=0.1, out=tmp_path)


def test_bad_noise_settings_are_one_line_errors(mae_run, byon_run, capsys):
    with pytest.raises(ByonError, match="outside"):
        align_uniform(byon_run, t=1000, n=4)
    with pytest.raises(ByonError, match="not both"):
        align_uniform(byon_run, t=5, sigma=0.1, n=4)
    with pytest.raises(ByonError, match="--pairs noise"):
        align_uniform(mae_run, pairs="views", t=5, n=4)
    assert main(["analyze", "align-uniform", "--run", str(mae_run), "--n", "4", "--pairs", "noise",
                 "--sigma", "-1"]) == 2
    assert "--sigma must be" in capsys.readouterr().err
