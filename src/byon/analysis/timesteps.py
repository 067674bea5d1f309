"""BYON's figure 9 (appendix C): the IAN timesteps drawn over a whole run, from the method's `t_hist` buffer.
Written at the end of every BYON run (`Method.run_figures`): `ian_timesteps.png` and `byon_summary.json`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byon.analysis.common import new_figure
from byon.rundir import atomic_write


def timestep_summary(hist: Tensor, interval: int = 100) -> dict:
    """Counts, moments, and appendix C's top five: the modal timestep of each `interval`-wide bin,
    ranked by its count."""
    T, total = hist.numel(), int(hist.sum())
    ts = torch.arange(T, dtype=torch.float64)
    mean = float((hist * ts).sum() / total) if total else float("nan")
    std = float(((hist * (ts - mean) ** 2).sum() / total).sqrt()) if total else float("nan")
    modes = []
    for lo in range(0, T, interval):
        seg = hist[lo:lo + interval]
        if int(seg.sum()):
            modes.append((int(seg.max()), lo + int(seg.argmax())))
    top5 = [t for _, t in sorted(modes, key=lambda ct: (-ct[0], ct[1]))[:5]]
    counts = [int(hist[lo:lo + interval].sum()) for lo in range(0, T, interval)]
    return {"num_timesteps": T, "total": total, "t_mean": mean, "t_std": std, "top5": top5,
            "interval": interval, "interval_counts": counts, "hist": [int(v) for v in hist]}


def plot_timesteps(hist: Tensor, top5: list[int], path: Path, label: str) -> None:
    fig = new_figure(7, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    T, width = hist.numel(), 20
    bins = hist[: T // width * width].view(-1, width).sum(1)
    ax.bar(torch.arange(bins.numel()) * width, bins.numpy(), width=width, align="edge", color="tab:blue")
    for t in top5:
        ax.axvline(t, color="tab:red", lw=1, ls="--")
    ax.set_xlabel("timestep t")
    ax.set_ylabel(f"count (bins of {width})")
    ax.set_title(f"BYON {label} timesteps; top-5 (appendix C): {', '.join(map(str, top5)) or '—'}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def ian_timesteps(method: Any, run_dir: str | Path) -> None:
    """`run_dir`/ian_timesteps.png and byon_summary.json from a BYON method's timestep histogram."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hist_t = method.t_hist.cpu()
    summary = timestep_summary(hist_t)
    summary["config"] = dataclasses.asdict(method.cfg)
    hist = summary.pop("hist")  # one line, not a thousand
    text = json.dumps(summary, indent=1)[:-2] + f',\n "hist": {json.dumps(hist)}\n}}\n'
    atomic_write(run_dir / "byon_summary.json", lambda f: f.write(text.encode()))
    plot_timesteps(hist_t, summary["top5"], run_dir / "ian_timesteps.png", "IAN" if method.cfg.ian else "uniform")


__all__ = ["ian_timesteps", "plot_timesteps", "timestep_summary"]
