"""`byon bench report`: benchmarks/RESULTS.md and plots, rendered from the per-run JSONs (never hand-edited)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from byon.bench.quality import LEFT_OUT, carries, read_as, row_mark
from byon.bench.speed import speed_table

COLUMNS = [  # (metric key, header)
    ("knn", "kNN"), ("linear", "linear"), ("lowshot10", "10-shot"), ("lowshot100", "100-shot"),
    ("finetune", "fine-tune"),
    ("knn_cls", "kNN cls"), ("knn_mean", "kNN mean"), ("linear_cls", "lin cls"), ("linear_mean", "lin mean"),
]


REFERENCE_ROWS = ("random-init", "supervised")  # listed after the pretraining methods


def _ms(xs: list[float], digits: int = 2) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    t = torch.tensor(xs, dtype=torch.float64)
    return f"{t.mean():.{digits}f}" if len(xs) == 1 else f"{t.mean():.{digits}f} ± {t.std():.{digits}f}"


def load_results(results: Path) -> dict[str, list[dict[str, Any]]]:
    """protocol → list of run records; rows of a `bench sweep` (e.g. BYON's ablations, rendered in
    byon-reproduction.md) are left to their own tables."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted(results.glob("*/*.json")):
        rec = json.loads(f.read_text())
        if "metrics" in rec and not rec.get("sweep"):
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
    notes: dict[str, list[str]] = {"‡": [], "§": []}
    for name in sorted(runs, key=lambda n: (n in REFERENCE_ROWS, n)):
        rs, mark, note = row_mark(sorted(runs[name], key=lambda r: r["seed"]))
        if mark:
            notes[mark].append(f"{name}: {note}")
            name += f" {mark}"
        cells = [_ms([r["metrics"].get(k) for r in rs]) for k, _ in COLUMNS]
        # no images/s: nothing was trained (the random-init row), so there is no training time to show
        wall = _ms([r["wall_time_s"] / 60 if r.get("wall_time_s") is not None and r.get("images_per_s") else None
                    for r in rs], 1)
        if any(r.get("wall_time_estimated") for r in rs):
            wall += "*"
        ips = _ms([r["images_per_s"] for r in rs], 0)
        gfl = _ms([r["flops_per_image"] / 1e9 if r.get("flops_per_image") else None for r in rs], 3)
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {wall} | {ips} | {gfl} |")
    if notes["‡"]:
        lines += ["", "‡ trained with an earlier recipe than its recipe file holds now — " + "; ".join(notes["‡"])
                  + ". `byon bench quality … --rerun-changed` re-runs it (the old record is kept under superseded/)."]
    if notes["§"]:
        lines += ["", LEFT_OUT + "; ".join(notes["§"]) + "."]
    if pixels:
        m = pixels["metrics"]
        lines += ["", "Raw-pixel reference rows (no model): "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in m.items())]
    return lines


def plot_accuracy(records: list[dict[str, Any]], path: Path, x: str) -> None:
    """Linear-probe top-1 of every run against its pretraining wall time (`x="time"`) or FLOPs (`x="flops"`:
    training FLOPs/image, forward + backward, × images seen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for r in records:
        if r["name"] == "pixels":
            continue
        if x == "time":
            v = r["wall_time_s"] / 60 if r.get("wall_time_s") else None
        else:
            imgs = r.get("steps", 0) * r.get("config", {}).get("train", {}).get("batch_size", 0)
            v = r["flops_per_image"] * imgs / 1e15 if r.get("flops_per_image") and imgs else None
        if v is None:
            continue
        ax.scatter(v, r["metrics"]["linear"], label=f"{r['name']} s{r['seed']}")
        ax.annotate(r["name"], (v, r["metrics"]["linear"]), fontsize=8)
    ax.set_xlabel("pretraining wall time (min)" if x == "time" else "pretraining compute (PFLOP, forward + backward)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _version(protocol: str) -> str | None:
    """'v1' for a results folder 'fmnist-cpu-v1' (an earlier protocol version kept for reference), else None."""
    head, _, tail = protocol.rpartition("-")
    return tail if head and tail[:1] == "v" and tail[1:].isdigit() else None


HOW_IT_RAN = ("data.val_size=", "train.num_threads=", "train.devices=")  # settings of a cell that are not its recipe


def recipe_winners(tune: Path, recipes: Path) -> list[tuple[str, dict[str, Any]]]:
    """(table stem, winner) per method, from `byon bench tune`'s <stem>-winner.json files: the step whose winner the
    method's recipe under `recipes` carries now (`carries`; <method>-winner.json first, then the coordinate-search
    steps <method>-<step>-winner.json), else <method>-winner.json."""
    steps: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for f in sorted(tune.glob("*-winner.json")):
        w = json.loads(f.read_text())
        steps[w["method"]].append((f.name.removesuffix("-winner.json"), w))
    out = []
    for method, ws in sorted(steps.items()):
        ws.sort(key=lambda sw: sw[0] != method)  # the method's own grid first (a stable sort keeps the rest's order)
        held = [(stem, w) for stem, w in ws if carries(w, recipes)]
        own = [(stem, w) for stem, w in ws if stem == method]
        if held or own:
            out.append((held or own)[0])
    return out


def tuned_table(results: Path, protocol: str, features: dict[str, str] | None = None,
                recipes: Path = Path("configs")) -> list[str]:
    """The val-tuned settings of each method (`recipe_winners`) with their val scores and the table they come from.

    `features` maps a method to the feature its test records read out; its val scores are shown for that feature
    (a winner recorded before the method's default feature changed scored the old one)."""
    winners = recipe_winners(results / "tune" / protocol, recipes)
    if not winners:
        return []
    lines = ["Tuned hyper-parameters (`byon bench tune`: chosen by val linear top-1, val kNN breaking ties; each "
             "row's grid and every cell's scores are in `results/tune/" + protocol + "/<val table>`; a method "
             "searched one coordinate at a time shows the step whose choice its `configs/<method>.yaml` holds):", "",
             "| method | tuned settings | val linear | val kNN | feature (the other's linear / kNN) | "
             "screen / full epochs | val table |", "|---|---|---|---|---|---|---|"]
    for stem, w in winners:
        sets = " ".join(f"`{s}`" for s in w["sets"] if not s.startswith(HOW_IT_RAN))
        feature = (features or {}).get(w["method"]) or w["val"].get("default_feature", "—")
        v = read_as(w["val"], feature)
        other = "; ".join(f"{f}: {v[f'linear_{f}']:.2f} / {v[f'knn_{f}']:.2f}" for f in ("cls", "mean")
                          if f != feature and f"linear_{f}" in v and f"knn_{f}" in v)
        lines.append(f"| {w['method']} | {sets} | {v['linear']:.2f} | {v['knn']:.2f} | {feature}"
                     f"{f' ({other})' if other else ''} | {w['screen_epochs']} / {w['epochs']} | `{stem}.md` |")
    pixels = results / "tune" / protocol / "pixels-val.json"
    if pixels.is_file():
        px = json.loads(pixels.read_text())["metrics"]
        lines += ["", f"Raw pixels on the same val split (no model): kNN {px['knn_raw']:.2f}, linear "
                      f"{px['linear_raw']:.2f}."]
    return [*lines, ""]


def render(results: Path, out: Path) -> Path:
    data = load_results(results)
    lines = ["# Results", "", "Rendered by `byon bench report` from the JSONs under "
             f"`{results}/` — do not edit by hand; re-run the benchmark instead.", ""]
    # protocol v2 (val-tuned recipes) first; earlier protocol versions (folders <protocol>-v1, ...) after it
    for protocol, records in sorted(data.items(), key=lambda kv: (_version(kv[0]) is not None, kv[0])):
        envs = sorted({(r.get("hardware") or "unknown hardware", r.get("torch") or "?", (r.get("commit") or "?")[:8])
                       for r in records})
        version = _version(protocol)
        title = (f"## {protocol}: protocol {version}, untuned (each method's paper recipe; superseded)" if version
                 else f"## {protocol}: protocol v2 (recipes tuned on the val split)")
        lines += [title, "", "Top-1 (%) on the test split; `kNN`/`linear`/`n-shot` use each method's "
                  "default feature (`cls` or `mean`), the other columns name theirs. Mean ± std over seeds.", ""]
        if version is None:
            # a method's own records are named after it (tagged variants, e.g. mae-e24, are never looked up)
            features = {r["name"]: r["metrics"]["default_feature"] for r in records
                        if r["metrics"].get("default_feature")}
            lines += tuned_table(results, protocol, features)
        lines += protocol_table(records)
        lines += ["", "Measured on: " + "; ".join(f"{h}, torch {t}, commit {c}" for h, t, c in envs), ""]
        if any(r.get("wall_time_estimated") for r in records):
            lines += ["\\* resumed from a checkpoint that predates the engine's time keeping: steps × batch / the "
                      "mean images/s logged over the run.", ""]
        for x, what in (("time", "wall time"), ("flops", "FLOPs")):
            png = out.parent / f"{protocol}-accuracy-vs-{x}.png"
            plot_accuracy(records, png, x)
            lines += [f"![accuracy vs {what}]({png.name})", ""]
    lines += speed_sections(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def speed_sections(results: Path) -> list[str]:
    """`byon bench speed` records (results/speed-cpu/, speed-gpu/): one table per folder."""
    lines = []
    for folder in sorted(results.glob("speed-*")):
        records = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
        records = [r for r in records if "speed" in r]
        if not records:
            continue
        envs = sorted({(r.get("hardware"), r.get("torch"), (r.get("commit") or "")[:8], r["protocol"],
                        r["precision"]) for r in records})
        steps = sorted({(r["speed"]["warmup_steps"], r["speed"]["timed_steps"]) for r in records})
        lines += [f"## Speed: {folder.name}", "",
                  "Steady-state training through the engine (warm-up steps excluded), training FLOPs per image "
                  "(forward + backward, `torch.utils.flop_counter`), and the matmul ceiling measured in the same "
                  "process with the same threads: a square GEMM at the model's MLP width and a large one. "
                  "`achieved / ceiling` uses the higher of the two; MFU is against the card's dense bf16 peak. "
                  "Feature extraction covers the train + test splits; kNN and linear probe run on those features "
                  "('—': timed with `--no-eval`). With `--profile-steps`, `torch.profiler` over that many steps after "
                  "the timed ones gives the self-time shares of GEMM/convolution kernels, attention kernels and "
                  "everything else, and the training FLOPs over the GEMM + attention time: how fast the kernels "
                  "themselves run. achieved / ceiling ≈ (1 − other share) × (GFLOP/s inside ÷ ceiling).",
                  ""]
        lines += speed_table(records)
        lines += ["", "Measured on: " + "; ".join(f"{h}, torch {t}, commit {c}, protocol {p}, {prec}"
                                                  for h, t, c, p, prec in envs)
                  + "; warm-up / timed steps: " + ", ".join(f"{w} / {n}" for w, n in steps), ""]
    return lines
