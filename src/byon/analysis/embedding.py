"""A 2-D map of a run's (cached) frozen features coloured by class: PCA always, t-SNE when scikit-learn is
installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byon.analysis.common import new_figure, output_paths, save
from byon.errors import ByonError, unknown
from byon.eval.frozen import default_feature, feature_types, run_features
from byon.rundir import load_run

PROJECTIONS = ("pca", "tsne")


def pca_2d(x: Tensor) -> tuple[Tensor, Tensor]:
    """x: (n, D) → (coordinates (n, 2) on the top two principal components, their explained-variance ratios
    (2,)). Each component's sign makes its largest |loading| positive, so the map does not flip between calls."""
    if x.shape[0] < 3 or x.shape[1] < 2:
        raise ByonError(f"PCA to 2-D needs at least 3 features of dimension ≥ 2, got {tuple(x.shape)}")
    x = x.double() - x.double().mean(dim=0)
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)
    V = Vh[:2]
    V = V * V.gather(1, V.abs().argmax(dim=1, keepdim=True)).sign()
    var = S**2
    return (x @ V.T).float(), (var[:2] / var.sum().clamp_min(1e-30)).float()


def tsne_2d(x: Tensor, seed: int = 0, perplexity: float = 30.0) -> Tensor:
    """x: (n, D) → (n, 2) t-SNE (scikit-learn, PCA init, perplexity ≤ (n − 1)/3)."""
    TSNE = _sklearn_tsne()
    perplexity = min(perplexity, (x.shape[0] - 1) / 3)
    y = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x.double().numpy())
    return torch.as_tensor(y, dtype=torch.float32)


def _sklearn_tsne() -> Any:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ByonError("embedding-2d --method tsne needs scikit-learn, which is not installed: "
                        "pip install scikit-learn (or use --method pca)") from None
    return TSNE


def class_separation(coords: Tensor, labels: Tensor) -> float:
    """Between-class over within-class variance of 2-D points (the trace form of Fisher's criterion); 0 when the
    class means coincide, large when classes form tight, distant clusters."""
    coords = coords.double()
    mu = coords.mean(dim=0)
    between = within = 0.0
    for c in labels.unique():
        pts = coords[labels == c]
        between += len(pts) * float((pts.mean(dim=0) - mu).pow(2).sum())
        within += float((pts - pts.mean(dim=0)).pow(2).sum())
    return between / max(within, 1e-30)


def embedding_2d(run_dir: str | Path, projection: str = "pca", feature: str | None = None, n: int | None = 2000,
                 out: str | Path | None = None, dataset: str | None = None, split: str = "test",
                 root: str | None = None, seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Project n (seeded random; None = all) features of the split to 2-D and scatter them by class. Features
    come from `byon.eval.frozen.run_features` (cached in the run); `feature` is 'cls' or 'mean' (default: the
    method's). Writes `embedding-2d-<projection>.{png,json}`; the JSON holds the points and labels."""
    if projection not in PROJECTIONS:
        raise unknown("projection (--method)", projection, PROJECTIONS)
    if projection == "tsne":
        _sklearn_tsne()  # fail before extracting features
    if n is not None and n < 3:
        raise ByonError(f"--n must be ≥ 3, got {n}")
    run_dir = Path(run_dir)
    cfg, method = run = load_run(run_dir)
    feature = feature or default_feature(method)
    if feature not in feature_types(method):  # no CLS token (I-JEPA): 'mean' only
        raise unknown("feature", feature, feature_types(method))
    dataset = dataset or cfg.data.dataset
    # seed 0: the split's features do not depend on it, and `byon eval` caches them under that key
    feats, labels = run_features(run_dir, dataset, split, root if root is not None else cfg.data.root, None, 0,
                                 device=device, run=run)
    x = feats[feature]
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    x, labels = x[idx], None if labels is None else labels[idx]
    if projection == "pca":
        coords, ratio = pca_2d(x)
        extra: dict[str, Any] = {"explained_variance_ratio": [float(r) for r in ratio]}
    else:
        coords, extra = tsne_2d(x, seed), {}
    result = {"analysis": "embedding-2d", "run": str(run_dir), "method": cfg.method, "dataset": dataset,
              "split": split, "n": len(x), "seed": seed, "projection": projection, "feature": feature} | extra
    if labels is not None:
        result["class_separation"] = class_separation(coords, labels)
    result |= {"points": [[round(float(a), 4), round(float(b), 4)] for a, b in coords],
               "labels": None if labels is None else labels.tolist()}

    fig = new_figure(5.6, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(coords[:, 0].numpy(), coords[:, 1].numpy(), s=7, color="tab:blue", lw=0)
    else:
        classes = labels.unique().tolist()
        for k, c in enumerate(classes):
            pts = coords[labels == c]
            ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=7, lw=0, color=_color(k, len(classes)), label=str(c))
        if len(classes) <= 20:
            ax.legend(title="class", fontsize=6, title_fontsize=7, markerscale=3, loc="best")
    if projection == "pca":
        ax.set_xlabel(f"PC1 ({100 * extra['explained_variance_ratio'][0]:.1f} %)")
        ax.set_ylabel(f"PC2 ({100 * extra['explained_variance_ratio'][1]:.1f} %)")
    ax.set_title(f"{cfg.method}: {feature} features, {projection.upper()} ({dataset} {split}, n={len(x)})",
                 fontsize=9)
    fig.tight_layout()
    png, js = output_paths(run_dir, f"embedding-2d-{projection}", out)
    result = save(fig, png, result, js)
    sep = f", class separation {result['class_separation']:.2f}" if "class_separation" in result else ""
    result["summary"] = f"{projection} of {len(x)} {feature} features{sep}"
    return result


def _color(k: int, num: int) -> Any:
    from matplotlib import colormaps

    if num <= 10:
        return colormaps["tab10"](k)
    if num <= 20:
        return colormaps["tab20"](k)
    return colormaps["viridis"](k / max(num - 1, 1))


__all__ = ["PROJECTIONS", "class_separation", "embedding_2d", "pca_2d", "tsne_2d"]
