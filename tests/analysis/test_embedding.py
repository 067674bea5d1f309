import importlib.util
import json

import pytest
import torch

from byon.analysis.embedding import class_separation, embedding_2d, pca_2d
from byon.cli import main
from byon.errors import ByonError

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def test_pca_of_points_on_a_plane():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, generator=g, dtype=torch.float64) * 3, torch.randn(200, generator=g, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    b = b - (a @ b) / (a @ a) * a  # uncorrelated with a, so the principal axes are exactly e1 and e3
    u, v = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    u[1], v[3] = 1.0, -1.0
    x = a[:, None] * u + b[:, None] * v + 7.0  # the plane spanned by e1 (large spread) and e3, shifted
    coords, ratio = pca_2d(x)
    assert ratio.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert ratio[0] > ratio[1]
    # each component's largest loading is made positive: PC1 = +e1 → a, PC2 = +e3 = −v → −b
    torch.testing.assert_close(coords[:, 0], a.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(coords[:, 1], -b.float(), atol=1e-4, rtol=0)
    assert ratio[0].item() == pytest.approx(float(a @ a / (a @ a + b @ b)), abs=1e-5)


def test_class_separation_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    pts = torch.tensor([[-1.0, 0.0], [-1.0, 2.0], [1.0, 0.0], [1.0, 2.0]])
    # class means (−1, 1) and (1, 1): between 4·1 = 4; within 4·1 = 4
    assert class_separation(pts, labels) == pytest.approx(1.0)
    assert class_separation(pts, torch.tensor([0, 1, 1, 0])) == pytest.approx(0.0)  # both means (0, 1)


def test_embedding_of_a_run(byon_run, tmp_path, png_ok):
    res = embedding_2d(byon_run, n=300, out=tmp_path)
    assert png_ok(tmp_path / "embedding-2d-pca.png")
    stored = json.loads((tmp_path / "embedding-2d-pca.json").read_text())
    assert stored["feature"] == "cls" and stored["projection"] == "pca" and stored["n"] == 300
    assert len(stored["points"]) == len(stored["labels"]) == 300
    assert all(len(p) == 2 for p in stored["points"]) and set(stored["labels"]) <= set(range(10))
    r1, r2 = stored["explained_variance_ratio"]
    assert 0 < r2 <= r1 <= 1 and stored["class_separation"] >= 0
    assert (byon_run / "features").is_dir()  # the cached features of eval/frozen.py
    mean = embedding_2d(byon_run, feature="mean", n=None, out=tmp_path / "all")
    assert mean["n"] == 500 and res["points"] != mean["points"][:300]


@pytest.mark.skipif(HAS_SKLEARN, reason="scikit-learn is installed")
def test_tsne_without_scikit_learn_says_how_to_get_it(mae_run, capsys):
    with pytest.raises(ByonError, match="pip install scikit-learn"):
        embedding_2d(mae_run, projection="tsne")
    assert main(["analyze", "embedding-2d", "--run", str(mae_run), "--method", "tsne"]) == 2
    assert "pip install scikit-learn" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_SKLEARN, reason="needs scikit-learn")
def test_tsne(mae_run, tmp_path, png_ok):
    res = embedding_2d(mae_run, projection="tsne", n=60, out=tmp_path)
    assert png_ok(tmp_path / "embedding-2d-tsne.png") and len(res["points"]) == 60
