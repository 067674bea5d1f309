"""Label-free alignment and uniformity of every block's features (Wang & Isola 2020, as DDAE §3.3 uses them:
eqs. 3–4, figure 3). Positive pairs are two independent noisings of one image (`noise`) or two augmented views
of it (`views`).

Method hook: a method whose features need more than its eval encoder on the noised image (e.g. a timestep
input) defines `layer_features(images, t, generator) -> list[(B, D)]`: images (B, C, H, W) clean and
normalised, t (B,) long DDPM timesteps to noise them at (the method noises them itself, drawing from
`generator`) or None for clean input; one (B, D) feature per layer, shallow to deep. Without it the default is
`encoder_layer_features` of the eval encoder on the input noised here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from byon.analysis.common import load_sample, new_figure, output_paths, save
from byon.corruption.diffusion import DDPMSchedule
from byon.data.transforms import augment
from byon.errors import ByonError, unknown
from byon.nn.vit import ViTEncoder

PAIRS = ("noise", "views")
DEFAULT_T = 100


def alignment(f1: Tensor, f2: Tensor) -> float:
    """L_align = E‖f(x) − f(x′)‖² over positive pairs. f1, f2: (n, D) L2-normalised; row i of each is a pair.
    0 (identical) … 4 (antipodal)."""
    return float((f1.double() - f2.double()).pow(2).sum(dim=-1).mean())


def uniformity(f: Tensor) -> float:
    """L_uniform = log E exp(−2‖f(x) − f(y)‖²) over the distinct pairs of rows of f: (n, D) L2-normalised.
    −8 (two antipodal points) … 0 (all identical: collapse); lower is more uniform."""
    if f.shape[0] < 2:
        raise ByonError("uniformity needs at least two images; use a larger --n")
    return float(torch.pdist(f.double(), p=2).pow(2).mul(-2).exp().mean().log())


def encoder_layer_features(encoder: ViTEncoder, images: Tensor) -> list[Tensor]:
    """The default layer features: for each block, the mean of its output patch tokens (CLS excluded, before
    the final norm). images: (B, C, H, W) normalised → depth × (B, D)."""
    depth, p0 = len(encoder.blocks), encoder.num_prefix_tokens
    _, inter, _ = encoder.forward_tokens(encoder.embed(images), return_layers=range(depth), norm=False)
    return [inter[i][:, p0:].mean(dim=1) for i in range(depth)]


def align_uniform(run_dir: str | Path, pairs: str | None = None, t: int | None = None, sigma: float | None = None,
                  n: int = 512, batch_size: int = 128, out: str | Path | None = None, dataset: str | None = None,
                  split: str = "test", root: str | None = None, seed: int = 0,
                  device: str | None = None) -> dict[str, Any]:
    """Alignment and uniformity per layer over n images, features L2-normalised.

    pairs: `noise` (default for methods with a DDPM schedule or a `layer_features` hook) — two independent
    noisings of each image at DDPM timestep t (the method's schedule, else the default linear one; default
    t = 100) or as x + σ·ε with `sigma`; `views` (default otherwise) — two random-resized-crop + flip views
    with the run's data settings. Uniformity averages the two sides of the pairs, as Wang & Isola's code does.
    """
    s = load_sample(run_dir, n, dataset, split, root, seed, device)
    method = s.method
    hook = getattr(method, "layer_features", None)
    own = getattr(method, "diffusion", None)
    schedule = own if isinstance(own, DDPMSchedule) else DDPMSchedule().to(s.device)
    pairs = pairs or ("noise" if hook is not None or isinstance(own, DDPMSchedule) else "views")
    if pairs not in PAIRS:
        raise unknown("--pairs", pairs, PAIRS)
    if t is not None and sigma is not None:
        raise ByonError("give --t or --sigma, not both")
    if pairs == "views" and (t is not None or sigma is not None):
        raise ByonError("--t and --sigma set the noise of --pairs noise; drop them or use --pairs noise")
    noise: dict[str, Any] = {}
    if pairs == "noise":
        if sigma is None:
            t = min(DEFAULT_T, schedule.num_timesteps - 1) if t is None else t
            if not 0 <= t < schedule.num_timesteps:
                raise ByonError(f"--t {t} is outside the schedule's 0…{schedule.num_timesteps - 1}")
            noise = {"t": t, "signal_scale": float(schedule.sqrt_ab[t]), "noise_scale": float(schedule.sqrt_1mab[t])}
        elif hook is not None:
            raise ByonError(f"method '{s.cfg.method}' noises its input itself from a DDPM timestep; use --t, "
                            f"not --sigma")
        elif sigma < 0:
            raise ByonError(f"--sigma must be ≥ 0, got {sigma}")
        else:
            noise = {"sigma": sigma}
    g = torch.Generator(device=s.device).manual_seed(seed)

    def layer_features(x: Tensor, noisy: bool) -> list[Tensor]:
        if hook is not None:
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device) if noisy else None
            return hook(x, tt, g)
        if noisy:
            eps = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            if sigma is not None:
                x = x + sigma * eps
            else:
                x = schedule.q_sample(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), eps)
        return encoder_layer_features(method.eval_encoder(), x)

    sides: list[list[list[Tensor]]] = [[], []]  # side → batch → layer → (b, D)
    with torch.inference_mode():
        for raw in s.batches(batch_size):
            for side in sides:
                if pairs == "noise":
                    feats = layer_features(s.normalized(raw), noisy=True)
                else:
                    view = augment(raw.to(s.device), s.cfg.data, s.info.mean, s.info.std, g)
                    feats = layer_features(view, noisy=False)
                side.append([F.normalize(f.float(), dim=-1).cpu() for f in feats])
    f1, f2 = ([torch.cat(layer) for layer in zip(*side)] for side in sides)
    layers = [{"layer": i + 1, "alignment": alignment(a, b), "uniformity": (uniformity(a) + uniformity(b)) / 2}
              for i, (a, b) in enumerate(zip(f1, f2))]
    result = s.header("align-uniform") | {
        "pairs": pairs, "noise": noise,
        "features": ("method.layer_features" if hook is not None else
                     "mean of each block's output patch tokens (eval encoder)") + ", L2-normalised",
        "layers": layers,
    }

    fig = new_figure(11, 3.3)
    x = [li["layer"] for li in layers]
    what = (f"t={t}" if "t" in noise else f"σ={sigma}") if pairs == "noise" else "augmented views"
    for k, (key, label) in enumerate((("alignment", "alignment (↓)"), ("uniformity", "uniformity (↓)"))):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.plot(x, [li[key] for li in layers], marker="o")
        ax.set_xticks(x)
        ax.set_xlabel("layer (block)")
        ax.set_ylabel(label)
    ax = fig.add_subplot(1, 3, 3)
    ax.plot([li["uniformity"] for li in layers], [li["alignment"] for li in layers], color="lightgrey", zorder=0)
    for li in layers:
        ax.scatter(li["uniformity"], li["alignment"], color="tab:blue")
        ax.annotate(str(li["layer"]), (li["uniformity"], li["alignment"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel("uniformity (numbers: layer)")
    ax.set_ylabel("alignment")
    fig.suptitle(f"{s.cfg.method}: alignment / uniformity per layer, pairs: {what} ({s.dataset} {split}, "
                 f"n={len(s.images)})", fontsize=9)
    fig.tight_layout()
    png, js = output_paths(s.run_dir, "align-uniform", out)
    result = save(fig, png, result, js)
    result["summary"] = "alignment / uniformity per layer: " + "  ".join(
        f"{li['alignment']:.3f}/{li['uniformity']:.3f}" for li in layers)
    return result


__all__ = ["DEFAULT_T", "PAIRS", "align_uniform", "alignment", "encoder_layer_features", "uniformity"]
