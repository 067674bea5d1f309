"""What a reconstruction method fills in: input / corrupted / reconstructed images side by side (MAE figure 2,
l-DAE figure 8).

Method hook: `reconstruct(images, generator) -> dict[str, (B, C, H, W)]`, images normalised; the dict holds at
least "input", "corrupted" and "reconstruction" in the same normalised space, and may add panels (e.g.
"denoised"); its order is the column order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from byon.analysis.common import check_rows, imshow_image, load_sample, new_figure, output_paths, save
from byon.methods import methods_with

REQUIRED = ("input", "corrupted", "reconstruction")


def supporting_methods() -> list[str]:
    return methods_with("reconstruct")


def reconstructions(run_dir: str | Path, n: int = 8, out: str | Path | None = None, dataset: str | None = None,
                    split: str = "test", root: str | None = None, seed: int = 0,
                    device: str | None = None) -> dict[str, Any]:
    """A grid of n images (rows) × the method's `reconstruct` panels (columns), un-normalised with the run's
    mean/std; the JSON holds each panel's mean squared error to the input (normalised units)."""
    check_rows(n)
    s = load_sample(run_dir, n, dataset, split, root, seed, device, hook="reconstruct", purpose="reconstructions")
    x = s.normalized(s.images)
    with torch.inference_mode():
        panels = s.method.reconstruct(x, torch.Generator(device=s.device).manual_seed(seed))
    missing = [k for k in REQUIRED if k not in panels]
    if missing:
        raise ValueError(f"{type(s.method).__name__}.reconstruct must return {REQUIRED}; missing {missing}")
    panels = {"input": panels["input"]} | panels
    result = s.header("reconstructions") | {
        "panels": list(panels),
        "mse_to_input": {k: float((v.float() - x).pow(2).mean()) for k, v in panels.items()},
    }
    shown = {k: s.to_display(v) for k, v in panels.items()}
    n, cols = len(x), len(shown)
    fig = new_figure(1.4 * cols, 1.4 * n + 0.3)
    for r in range(n):
        for c, (name, imgs) in enumerate(shown.items()):
            ax = fig.add_subplot(n, cols, r * cols + c + 1)
            imshow_image(ax, imgs[r])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(f"{s.cfg.method}: reconstructions ({s.dataset} {split})", fontsize=8)
    fig.tight_layout()
    png, js = output_paths(s.run_dir, "reconstructions", out)
    result = save(fig, png, result, js)
    result["summary"] = "MSE to input: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mse_to_input"].items()
                                                      if k != "input")
    return result


__all__ = ["REQUIRED", "reconstructions", "supporting_methods"]
