import json
import math

import pytest
import torch

from byon.analysis.attention import (
    attention_distance,
    attention_maps,
    block_attention,
    mean_attention_distance,
    patch_centres,
)
from byon.cli import main
from byon.methods.mae import MAE
from byon.nn.vit import ViTEncoder
from byon.rundir import load_run


def test_patch_centres_are_row_major_pixel_centres():
    c = patch_centres(2, 4)
    assert c.tolist() == [[2, 2], [6, 2], [2, 6], [6, 6]]  # (x, y): row 0 left, row 0 right, row 1 ...


def test_attending_to_oneself_is_distance_zero():
    attn = torch.eye(9).expand(3, 2, 9, 9)
    assert torch.equal(mean_attention_distance(attn, 3, 4), torch.zeros(2))


def test_every_query_on_one_fixed_patch():
    # 2×2 grid of 4-px patches, every query looks at patch 0 (top left): distances 0, 4, 4, 4√2
    attn = torch.zeros(1, 1, 4, 4)
    attn[..., 0] = 1
    assert mean_attention_distance(attn, 2, 4).item() == pytest.approx((8 + 4 * math.sqrt(2)) / 4)
    # 3×3 grid of 2-px patches, every query on the centre patch: 4 neighbours at 2 px, 4 corners at 2√2 px
    attn = torch.zeros(1, 1, 9, 9)
    attn[..., 4] = 1
    assert mean_attention_distance(attn, 3, 2).item() == pytest.approx((4 * 2 + 4 * 2 * math.sqrt(2)) / 9)


def test_heads_are_separate_and_rows_are_renormalised():
    eye, fixed = torch.eye(4), torch.zeros(4, 4)
    fixed[:, 3] = 5.0  # unnormalised: the function renormalises each query's row
    uniform = torch.full((4, 4), 0.7)
    attn = torch.stack([eye, fixed, uniform]).unsqueeze(0).expand(2, 3, 4, 4)
    d = mean_attention_distance(attn, 2, 4)
    # uniform on a 2×2 grid: every query sees {0, 4, 4, 4√2}; so does the fixed corner patch
    expected = (8 + 4 * math.sqrt(2)) / 4
    assert d.tolist() == pytest.approx([0.0, expected, expected])


def test_rejects_attention_that_is_not_over_the_grid():
    with pytest.raises(ValueError, match="must be"):
        mean_attention_distance(torch.ones(1, 1, 5, 5), 2, 4)


def test_block_attention_is_the_encoders_softmax(mae_run):
    _, method = load_run(mae_run)
    enc = method.encoder
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        attn = dict(block_attention(enc, x))
        _, _, ref = enc.forward_tokens(enc.embed(x), return_attn=range(len(enc.blocks)))
    assert attn.keys() == ref.keys() == {0, 1}
    for i in attn:
        assert attn[i].shape == (2, 2, 50, 50)
        torch.testing.assert_close(attn[i], ref[i])
        torch.testing.assert_close(attn[i].sum(-1), torch.ones(2, 2, 50))


def test_attention_distance_of_a_run(mae_run, tmp_path, png_ok):
    res = attention_distance(mae_run, n=24, batch_size=10, out=tmp_path)
    assert png_ok(tmp_path / "attention-distance.png")
    stored = json.loads((tmp_path / "attention-distance.json").read_text())
    assert stored["n"] == 24 and stored["grid"] == 7 and stored["patch_size"] == 4
    assert len(stored["layers"]) == 2  # vit-test: 2 blocks of 2 heads
    top = stored["max_possible"]
    assert top == pytest.approx(6 * math.sqrt(2) * 4)
    assert 0 < stored["uniform_attention"] < top
    for layer in stored["layers"]:
        assert len(layer["heads"]) == 2 and all(0 <= d <= top for d in layer["heads"])
        assert layer["min"] <= layer["mean"] <= layer["max"]
        assert layer["std_over_heads"] == pytest.approx(abs(layer["heads"][0] - layer["heads"][1]) / 2, abs=1e-4)
    assert res["files"]["json"] == str(tmp_path / "attention-distance.json")


def test_attention_maps_of_a_run(byon_run, png_ok):
    res = attention_maps(byon_run, n=3)
    assert png_ok(byon_run / "analysis" / "attention-maps.png")  # the default place
    stored = json.loads((byon_run / "analysis" / "attention-maps.json").read_text())
    assert stored["layer"] == 2 and len(stored["heads"]) == 2
    for head in stored["heads"]:
        assert 0 <= head["cls_self"] <= 1 and 0 <= head["entropy"] <= 1
    maps = torch.tensor(stored["mean_map"])
    assert maps.shape == (3, 7, 7) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(3), atol=1e-3, rtol=0)
    assert res["n"] == 3


def test_encoders_without_cls(mae_run, tmp_path, monkeypatch):
    _, method = load_run(mae_run)
    torch.manual_seed(0)
    no_cls = ViTEncoder(method.encoder.shape, class_token=False).eval()  # as I-JEPA's
    monkeypatch.setattr(MAE, "eval_encoder", lambda self: no_cls)
    dist = attention_distance(mae_run, n=4, out=tmp_path)
    assert all(len(li["heads"]) == 2 and li["max"] <= dist["max_possible"] for li in dist["layers"])
    maps = attention_maps(mae_run, n=2, out=tmp_path)
    assert maps["query"].startswith("mean over patch queries") and "cls_self" not in maps["heads"][0]
    torch.testing.assert_close(torch.tensor(maps["mean_map"]).sum(dim=(1, 2)), torch.ones(2), atol=1e-3, rtol=0)


def test_cli_attention_distance(mae_run, tmp_path, capsys):
    assert main(["analyze", "attention-distance", "--run", str(mae_run), "--n", "8",
                 "--out", str(tmp_path / "ad.png")]) == 0
    assert (tmp_path / "ad.png").is_file() and (tmp_path / "ad.json").is_file()
    assert "wrote" in capsys.readouterr().out
    assert main(["analyze", "attention-maps", "--run", str(mae_run), "--n", "100"]) == 2
    assert "--n 100" in capsys.readouterr().err
