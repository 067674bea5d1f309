"""`byon bench report`: benchmarks/RESULTS.md and plots, rendered from the per-run JSONs (never hand-edited)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

COLUMNS = [  # (metric key, header)
    ("knn", "kNN"), ("linear", "linear"), ("lowshot10", "10-shot"), ("lowshot100", "100-shot"),
    ("knn_cls", "kNN cls"), ("knn_mean", "kNN mean"), ("linear_cls", "lin cls"), ("linear_mean", "lin mean"),
]


def _ms(xs: list[float], digits: int = 2) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    t = torch.tensor(xs, dtype=torch.float64)
    return f"{t.mean():.{digits}f}" if len(xs) == 1 else f"{t.mean():.{digits}f} ± {t.std():.{digits}f}"


def load_results(results: Path) -> dict[str, list[dict[str, Any]]]:
    """protocol → list of run records."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted(results.glob("*/*.json")):
        rec = json.loads(f.read_text())
        if "metrics" in rec:
            out[f.parent.name].append(rec)
    return out


def protocol_table(records: list[dict[str, Any]]) -> list[str]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    pixels = None
    for r in records:
        if r["name"] == "pixels":
            pixels = r
        else:
            runs[r["name"]].append(r)
    head = "| run | seeds | " + " | ".join(h for _, h in COLUMNS) + " | wall min | images/s | GFLOPs/img |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    for name in sorted(runs, key=lambda n: (n == "random-init", n)):
        rs = sorted(runs[name], key=lambda r: r["seed"])
        cells = [_ms([r["metrics"].get(k) for r in rs]) for k, _ in COLUMNS]
        wall = _ms([r["wall_time_s"] / 60 for r in rs], 1)
        ips = _ms([r["images_per_s"] for r in rs], 0)
        gfl = _ms([r["flops_per_image"] / 1e9 if r.get("flops_per_image") else None for r in rs], 3)
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {wall} | {ips} | {gfl} |")
    if pixels:
        m = pixels["metrics"]
        lines += ["", "Raw-pixel reference rows (no model): "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in m.items())]
    return lines


def plot_accuracy_vs_time(records: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for r in records:
        if r["name"] in ("pixels",) or not r.get("wall_time_s"):
            continue
        ax.scatter(r["wall_time_s"] / 60, r["metrics"]["linear"], label=f"{r['name']} s{r['seed']}")
        ax.annotate(r["name"], (r["wall_time_s"] / 60, r["metrics"]["linear"]), fontsize=8)
    ax.set_xlabel("pretraining wall time (min)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def render(results: Path, out: Path) -> Path:
    data = load_results(results)
    lines = ["# Results", "", "Rendered by `byon bench report` from the JSONs under "
             f"`{results}/` — do not edit by hand; re-run the benchmark instead.", ""]
    for protocol, records in sorted(data.items()):
        envs = sorted({(r.get("hardware"), r.get("torch"), (r.get("commit") or "")[:8]) for r in records})
        lines += [f"## {protocol}", "", "Top-1 (%) on the test split; `kNN`/`linear`/`n-shot` use each method's "
                  "default feature (`cls` or `mean`), the other columns name theirs. Mean ± std over seeds.", ""]
        lines += protocol_table(records)
        lines += ["", "Measured on: " + "; ".join(f"{h}, torch {t}, commit {c}" for h, t, c in envs), ""]
        png = out.parent / f"{protocol}-accuracy-vs-time.png"
        plot_accuracy_vs_time(records, png)
        lines += [f"![accuracy vs wall time]({png.name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
