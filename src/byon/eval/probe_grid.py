"""DDAE's layer × timestep linear-probe grid (Xiang et al. 2023, §3.2 and figure 2): for every noise level t and
every block, a linear probe on the block's global-average-pooled activations of images noised at t (fresh
noise per call), from the method's `layer_features(images, t, generator)` hook (EMA weights for DDAE).
Writes eval/probe-grid-<dataset>.{json,png} and names the best (layer, t).

All layers of one t train in a single pass over the same minibatches (`linear_heads`; each head is exactly
`linear_probe` on its layer). Layers count from 1, shallow to deep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from byon.data import load_dataset
from byon.errors import ByonError
from byon.eval.features import extract_features
from byon.eval.frozen import checkpoint_tag
from byon.eval.linear import BASE_LR, linear_heads
from byon.rundir import load_run_for, write_json

DEFAULT_TIMESTEPS = (1, 10, 25, 50, 100, 200)


def parse_layers(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """'all' / None → 1 … num_layers; '2,4' or [2, 4] → those, checked."""
    if spec is None or spec == "all":
        return list(range(1, num_layers + 1))
    try:
        layers = [int(s) for s in spec.split(",") if s.strip()] if isinstance(spec, str) else [int(s) for s in spec]
    except ValueError:
        raise ByonError(f"--layers takes 'all' or comma-separated block numbers (e.g. 3,6), got '{spec}'") from None
    bad = [n for n in layers if not 1 <= n <= num_layers]
    if not layers or bad:
        raise ByonError(f"--layers {spec}: the network has blocks 1…{num_layers}")
    return sorted(set(layers))


def parse_timesteps(spec: str | Sequence[int] | None) -> list[int]:
    if spec is None:
        return list(DEFAULT_TIMESTEPS)
    try:
        ts = [int(s) for s in spec.split(",") if s.strip()] if isinstance(spec, str) else [int(s) for s in spec]
    except ValueError:
        raise ByonError(f"--timesteps takes comma-separated DDPM timesteps (e.g. 1,10,50), got '{spec}'") from None
    if not ts or min(ts) < 0:
        raise ByonError(f"--timesteps must be non-negative DDPM timesteps, got '{spec}'")
    return sorted(set(ts))


def _layer_features(method: torch.nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], t: int,
                    layers: list[int], seed: int, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """{f'layer{l}': (N, D_l)} of uint8 images (N, C, H, W) noised at t; one generator for the whole pass."""
    g = torch.Generator(device=device).manual_seed(seed)

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = method.layer_features(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), g)
        return {f"layer{n}": feats[n - 1] for n in layers}

    return extract_features(fn, images, mean, std, batch_size=batch_size, device=device)


def probe_grid(run_dir: str | Path, dataset: str | None = None, layers: str | Sequence[int] | None = None,
               timesteps: str | Sequence[int] | None = None, root: str | None = None, subset: int | None = None,
               seed: int = 0, epochs: int = 30, batch_size: int = 256, feature_batch: int = 256,
               device: str | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Linear-probe top-1 for every (layer, t); returns and writes {"layers", "timesteps", "top1": [[layer]
    [t]], "best": {"layer", "t", "top1"}, ...} to eval/probe-grid-<dataset>.json, plus the heat map (.png).
    `checkpoint`: which of the run's checkpoints (`rundir.find_checkpoint`), named in the files when given."""
    run_dir = Path(run_dir)
    cfg, method, dev = load_run_for(run_dir, "layer_features", "the layer × timestep probe grid", device, checkpoint)
    info = method.info
    dataset = dataset or cfg.data.dataset
    train = load_dataset(dataset, "train", root=root, subset=subset, seed=seed)
    test = load_dataset(dataset, "test", root=root)
    if train.labels is None or test.labels is None:
        raise ByonError(f"dataset '{dataset}' has no labels; the probe grid needs a labelled dataset")
    if train.in_chans != info.in_chans or train.img_size != info.img_size:
        raise ByonError(f"dataset '{dataset}' has {train.in_chans}x{train.img_size}px images but the run expects "
                        f"{info.in_chans}x{info.img_size}px; probe on data shaped like the training data")
    num_layers = getattr(method, "num_layers", None)
    if num_layers is None:
        with torch.inference_mode():
            probe = (train.images[:2].to(dev).float() / 255)
            num_layers = len(method.layer_features(probe, torch.zeros(2, dtype=torch.long, device=dev),
                                                   torch.Generator(device=dev).manual_seed(0)))
    layers_ = parse_layers(layers, num_layers)
    ts = parse_timesteps(timesteps)
    lr = BASE_LR["sgd"] * batch_size / 256
    grid: list[list[float]] = [[float("nan")] * len(ts) for _ in layers_]
    for j, t in enumerate(ts):
        # train and test draw from generators of different seeds: their noise is independent
        tr = _layer_features(method, train.images, info.mean, info.std, t, layers_, seed, feature_batch, dev)
        te = _layer_features(method, test.images, info.mean, info.std, t, layers_, seed + 1, feature_batch, dev)
        heads = [(f"layer{n}", lr) for n in layers_]
        for i, r in enumerate(linear_heads(tr, train.labels, te, test.labels, heads, epochs=epochs,
                                           batch_size=batch_size, seed=seed)):
            grid[i][j] = r["top1"]
    i, j = max(((i, j) for i in range(len(layers_)) for j in range(len(ts))), key=lambda ij: grid[ij[0]][ij[1]])
    result: dict[str, Any] = {
        "eval": "probe-grid", "run": str(run_dir), "method": cfg.method, "dataset": dataset, "subset": subset,
        "features": "global-average-pooled block outputs of images noised at DDPM timestep t (fresh noise per call)",
        "layers": layers_, "timesteps": ts, "top1": grid,
        "best": {"layer": layers_[i], "t": ts[j], "top1": grid[i][j]},
        "probe": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
    }
    (run_dir / "eval").mkdir(exist_ok=True)
    stem = run_dir / "eval" / (f"probe-grid-{dataset}" + (f"-checkpoint={checkpoint_tag(checkpoint)}" if checkpoint
                                                          else ""))
    write_json(stem.with_suffix(".json"), result)
    plot_grid(result, stem.with_suffix(".png"))
    return result


def plot_grid(result: dict[str, Any], path: Path) -> None:
    """Heat map of top-1 over layers (rows, deepest on top) × timesteps (columns), the best cell boxed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    layers, ts, top1 = result["layers"], result["timesteps"], torch.tensor(result["top1"])
    fig = Figure(figsize=(max(4.5, 1.5 + 0.8 * len(ts)), max(3.0, 1.4 + 0.4 * len(layers))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(top1.numpy(), origin="lower", aspect="auto", cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(ts)):
            ax.text(j, i, f"{float(top1[i, j]):.1f}", ha="center", va="center", fontsize=7, color="white")
    b = result["best"]
    bi, bj = layers.index(b["layer"]), ts.index(b["t"])
    ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_xticks(range(len(ts)), [str(t) for t in ts])
    ax.set_yticks(range(len(layers)), [str(n) for n in layers])
    ax.set_xlabel("timestep t")
    ax.set_ylabel("block")
    ax.set_title(f"{result['method']}: linear probe top-1 ({result['dataset']})\nbest: block {b['layer']}, "
                 f"t={b['t']}: {b['top1']:.1f}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


__all__ = ["DEFAULT_TIMESTEPS", "parse_layers", "parse_timesteps", "plot_grid", "probe_grid"]
