"""benchmarks/byon-reproduction.md: BYON against its baselines (paper Table 2) and its ablation tables (Tables 1,
4, 6) re-tested under our protocol.

Rendered from the `byon bench quality` records of the methods' tuned recipes (results/<protocol>/<method>-seed<s>.json)
and the `byon bench sweep` records (results/<protocol>/<folder>-<row>-seed<s>.json, one per seed), next to the
paper's ImageNet fine-tuning numbers. Each of the paper's orderings is judged on our mean ± std over seeds:
*confirmed* when our difference of means has the paper's sign and exceeds 2 standard deviations (the issue's rule;
the seeds' pooled std sqrt((s_a² + s_b²) / 2), stricter than 2 standard errors of the difference at 3 seeds),
*reversed* when it has the other sign beyond that, else *not confirmed*.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from byon.bench.quality import LEFT_OUT, row_mark

# (sweep tag, row label, the paper's ImageNet-1K fine-tune top-1)
TABLE1 = [
    ("ablation-contrastive", "contrastive", 80.27),
    ("ablation-denoise", "denoise", 80.14),
    ("ablation-denoise_ian", "denoise + IAN", 82.38),
    ("ablation-denoise_contrastive_sue", "denoise + contrastive + SUE", 82.01),
    ("ablation-demask", "demask", 82.89),
    ("ablation-demask_contrastive_sue", "demask + contrastive + SUE", 83.02),
    ("ablation-demask_denoise", "demask + denoise", 82.86),
    ("ablation-demask_denoise_ian", "demask + denoise + IAN", 83.16),
    ("ablation-demask_denoise_contrastive_sue", "demask + denoise + contrastive + SUE", 82.84),
    ("ablation-full", "full (all five)", 83.56),
]
TABLE4 = [("lambda_ian-l0", "λ = 0", 82.94), ("lambda_ian-l01", "λ = 0.1", 83.56),
          ("lambda_ian-l05", "λ = 0.5", 83.28), ("lambda_ian-l1", "λ = 1", 81.70)]
TABLE6 = [("mask_ratio-r050_noian", "50 %, w/o IAN", 82.25), ("mask_ratio-r050_ian", "50 %, w/ IAN", 83.04),
          ("mask_ratio-r060_noian", "60 %, w/o IAN", 82.84), ("mask_ratio-r060_ian", "60 %, w/ IAN", 83.56),
          ("mask_ratio-r070_noian", "70 %, w/o IAN", 82.77), ("mask_ratio-r070_ian", "70 %, w/ IAN", 83.54)]
# The orderings each table claims: (better row, worse row) by sweep tag.
CLAIMS = {
    "Table 1": [("ablation-full", tag) for tag, _, _ in TABLE1[:-1]]
    + [("ablation-denoise_ian", "ablation-denoise"), ("ablation-demask_denoise_ian", "ablation-demask_denoise")],
    "Table 4": [("lambda_ian-l01", tag) for tag in ("lambda_ian-l0", "lambda_ian-l05", "lambda_ian-l1")],
    "Table 6": [(f"mask_ratio-r0{r}_ian", f"mask_ratio-r0{r}_noian") for r in (50, 60, 70)],
}
TABLES = {"Table 1": TABLE1, "Table 4": TABLE4, "Table 6": TABLE6}
ABLATION_TAGS = frozenset(tag for table in TABLES.values() for tag, _, _ in table)
METRICS = ("finetune", "linear", "knn", "lowshot10")
# Table 2 (appendix A): ImageNet-1K fine-tune top-1, mean ± std over five seeds; (record name, label, mean, std)
TABLE2 = [("simmim", "SimMIM", 82.54, 0.15), ("mae", "MAE", 82.78, 0.20), ("diffmae", "DiffMAE", 82.60, 0.33),
          ("maskdit", "MaskDiT", 82.86, 0.05), ("byon", "BYON", 83.56, 0.16)]
TABLE2_METRICS = {"knn": "kNN", "linear": "linear", "lowshot10": "10-shot", "finetune": "fine-tune"}


def load_rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """sweep tag → its records (one per seed), from results/<protocol>/<tag>[-<hash>]-seed<s>.json."""
    tags = ABLATION_TAGS | {name for name, *_ in TABLE2}
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(folder.glob("*-seed*.json")):
        rec = json.loads(f.read_text())
        name = rec.get("name", "")
        if name in tags:
            out.setdefault(name, []).append(rec)
    return out


def mean_std(xs: list[float]) -> tuple[float, float, int]:
    n = len(xs)
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return m, s, n


def verdict(a: list[float], b: list[float], paper_sign: float) -> tuple[str, float]:
    """Is mean(a) − mean(b) of the paper's sign beyond 2 pooled standard deviations? → (verdict, our difference)."""
    (ma, sa, na), (mb, sb, nb) = mean_std(a), mean_std(b)
    diff = ma - mb
    if na < 2 or nb < 2:
        return "one seed: not judged", diff
    std = math.sqrt((sa**2 + sb**2) / 2)
    if diff * paper_sign > 2 * std:
        return "confirmed", diff
    if diff * paper_sign < -2 * std:
        return "reversed", diff
    return "not confirmed", diff


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "—"
    m, s, n = mean_std(xs)
    return f"{m:.2f}" if n == 1 else f"{m:.2f} ± {s:.2f}"


def render_reproduction(results: Path, protocol: str, out: Path) -> Path:
    """Write `out` from results/<protocol>/ (the sweeps) and the val screens results/tune/<protocol>/byon*.md
    (byon-reading.md: the reading, one factor at a time; byon.md and byon-*.md: the steps after it)."""
    rows, marks = {}, {}
    for tag, recs in load_rows(results / protocol).items():
        shown, mark, note = row_mark(sorted(recs, key=lambda r: r["seed"]))
        rows[tag], marks[tag] = shown, (mark, note)
    ablations = [recs for tag, recs in rows.items() if tag in ABLATION_TAGS]
    metric = next((m for m in METRICS if ablations and all(r["metrics"].get(m) is not None
                                                              for recs in ablations for r in recs)), "linear")
    values = {tag: [r["metrics"][metric] for r in recs if r["metrics"].get(metric) is not None]
              for tag, recs in rows.items()}
    lines = ["# BYON: the paper's comparison and ablations re-tested", "",
             f"Rendered by `byon bench report` from `{results}/{protocol}/` (the `byon bench quality` and `sweep` "
             "records) — do not edit by hand. Ours: top-1 (%) on the test split under the `" + protocol + "` "
             "protocol, mean ± std over seeds; Table 2 is judged on every metric, Tables 1, 4 and 6 on "
             f"**{metric}** (the first of {', '.join(METRICS)} that every row of theirs has). The paper's "
             "numbers are ViT-B/16 ImageNet-1K fine-tuning. A paper ordering is *confirmed* when our difference has "
             "its sign and exceeds 2 standard deviations (the seeds' pooled std), *reversed* when it has the other "
             "sign beyond that, else *not confirmed*.", ""]
    lines += table2_section(rows, protocol, marks)
    for title, table in TABLES.items():
        notes: dict[str, list[str]] = {"‡": [], "§": []}
        lines += [f"## {title}", "", "| row | paper | ours: linear | ours: kNN | ours: 10-shot | ours: fine-tune | "
                  "seeds |", "|---|---|---|---|---|---|---|"]
        for tag, label, paper in table:
            recs = rows.get(tag, [])
            label = _mark(label, marks.get(tag), notes)
            cols = [_fmt([r["metrics"][k] for r in recs if r["metrics"].get(k) is not None])
                    for k in ("linear", "knn", "lowshot10", "finetune")]
            seeds = ",".join(str(r["seed"]) for r in sorted(recs, key=lambda r: r["seed"])) or "—"
            lines.append(f"| {label} | {paper:.2f} | " + " | ".join(cols) + f" | {seeds} |")
        lines += _footnotes(notes)
        labels = {tag: label for tag, label, _ in table}
        paper = {tag: p for tag, _, p in table}
        lines += ["", "| paper's ordering | paper Δ | our Δ | verdict |", "|---|---|---|---|"]
        for better, worse in CLAIMS[title]:
            pd = paper[better] - paper[worse]
            if values.get(better) and values.get(worse):
                v, d = verdict(values[better], values[worse], math.copysign(1.0, pd))
                lines.append(f"| {labels[better]} > {labels[worse]} | {pd:+.2f} | {d:+.2f} | {v} |")
            else:
                lines.append(f"| {labels[better]} > {labels[worse]} | {pd:+.2f} | — | not run yet |")
        lines.append("")
    lines += cost_section(results / "flops" / "byon-readings.json")
    tuned = results / "tune" / protocol
    screens = sorted(tuned.glob("byon*.md"), key=lambda p: (p.stem != "byon-reading", p.stem))
    lines += ["## The val screen that chose the default reading", ""]
    lines += [p.read_text().replace("# Tuning", "### Tuning", 1) for p in screens] if screens else \
        ["Not run yet: `byon bench tune --protocol " + protocol + " --methods byon --grid-file "
         "configs/tune/byon-reading.yaml --name byon-reading` (see benchmarks/README.md)."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out


def _mark(label: str, mark: tuple[str, str] | None, notes: dict[str, list[str]]) -> str:
    """`label` with its row's mark (`row_mark`: ‡ every record predates its recipe, § some seeds left out for
    that), the mark's note added to `notes`."""
    if not mark or not mark[0]:
        return label
    notes[mark[0]].append(f"{label}: {mark[1]}")
    return f"{label} {mark[0]}"


def _footnotes(notes: dict[str, list[str]]) -> list[str]:
    lines = []
    if notes["‡"]:
        lines += ["", "‡ trained with an earlier recipe than its recipe file holds now (its verdicts too) — "
                  + "; ".join(notes["‡"]) + "."]
    if notes["§"]:
        lines += ["", LEFT_OUT + "; ".join(notes["§"]) + "."]
    return lines


def table2_section(rows: dict[str, list[dict[str, Any]]], protocol: str,
                   marks: dict[str, tuple[str, str]]) -> list[str]:
    """Paper Table 2 (BYON against SimMIM, MAE, DiffMAE, MaskDiT) from the methods' protocol records (as `row_mark`
    left them): every metric, and each "BYON > baseline" judged on each metric. `marks`: row → its mark and note."""
    lines = ["## Table 2: BYON against the baselines", "",
             f"Each method at its val-tuned recipe (`configs/<method>.yaml`, RESULTS.md), `byon bench quality "
             f"--protocol {protocol}`; the paper's column is ImageNet-1K fine-tuning over five seeds.", "",
             "| method | paper | " + " | ".join(f"ours: {v}" for v in TABLE2_METRICS.values()) + " | seeds |",
             "|---|---|" + "---|" * len(TABLE2_METRICS) + "---|"]
    def col(recs: list[dict[str, Any]], key: str) -> list[float]:
        return [r["metrics"][key] for r in recs if r["metrics"].get(key) is not None]

    notes: dict[str, list[str]] = {"‡": [], "§": []}
    for name, label, paper, paper_std in TABLE2:
        recs = rows.get(name, [])
        seeds = ",".join(str(r["seed"]) for r in sorted(recs, key=lambda r: r["seed"])) or "—"
        label = _mark(label, marks.get(name), notes)
        lines.append(f"| {label} | {paper:.2f} ± {paper_std:.2f} | "
                     + " | ".join(_fmt(col(recs, k)) for k in TABLE2_METRICS) + f" | {seeds} |")
    lines += ["", "| paper's ordering | paper Δ | " + " | ".join(f"{v}: our Δ, verdict" for v in
                                                              TABLE2_METRICS.values()) + " |",
              "|---|---|" + "---|" * len(TABLE2_METRICS)]
    byon = rows.get("byon", [])
    for name, label, paper, _ in TABLE2[:-1]:
        cells = []
        for k in TABLE2_METRICS:
            a, b = col(byon, k), col(rows.get(name, []), k)
            if a and b:
                v, d = verdict(a, b, +1.0)
                cells.append(f"{d:+.2f}, {v}")
            else:
                cells.append("not run yet")
        lines.append(f"| BYON > {label} | {TABLE2[-1][2] - paper:+.2f} | " + " | ".join(cells) + " |")
    return [*lines, *_footnotes(notes), ""]


def cost_section(path: Path) -> list[str]:
    """Training FLOPs per image of BYON's readings beside the baselines (scripts/bench/flops-byon-readings.py)."""
    lines = ["## Cost per image", ""]
    if not path.is_file():
        return [*lines, "Not measured yet: `python scripts/bench/flops-byon-readings.py`.", ""]
    rec = json.loads(path.read_text())
    lines += [f"Training FLOPs per image (forward + backward, `torch.utils.flop_counter` on one step) at "
              f"{rec['protocol']}; × DiffMAE is against DiffMAE's built-in (paper) recipe, mask 0.75 — the paper's "
              f"Table 5 has BYON at 63.8 / 45.5 = 1.40 × DiffMAE's GFLOPs at ViT-B. "
              f"`{rec['command']}` at commit {str(rec['commit'])[:8]}.", "",
              "| method | settings | GFLOPs / image | × DiffMAE |", "|---|---|---|---|"]
    def settings(r: dict[str, Any]) -> str:
        if r.get("config"):
            return f"`{r['config']}`" + (" (the default reading)" if r["config"].endswith("byon/default.yaml") else "")
        label = "the spec's reading (built-in recipe)" if r["method"] == "byon" else "built-in recipe"
        return " ".join(f"`{x}`" for x in r["sets"]) or label

    lines += [f"| {r['method']} | {settings(r)} | {r['gflops_per_image']:.3f} | {r['over_diffmae']:.2f} |"
              for r in rec["rows"]]
    return [*lines, "", *speed_rows(path.parent.parent / "speed-cpu")]


SPEED_ROWS = ("diffmae", "diffmae-tuned", "simmim", "mae", "maskdit", "byon", "byon-default")


def speed_rows(speed: Path) -> list[str]:
    """Measured training images/s of BYON beside DiffMAE and SimMIM (`byon bench speed` records, machine idle)."""
    recs = {n: json.loads(f.read_text()) for n in SPEED_ROWS if (f := speed / f"{n}.json").is_file()}
    base = recs.get("diffmae", {}).get("speed", {}).get("train_images_per_s")
    if not recs or not base:
        return []
    lines = ["Measured training speed (`byon bench speed`, steady state, one thread, nothing else running; "
             "RESULTS.md's speed section has the commands):", "",
             "| record | settings | train img/s | DiffMAE's img/s ÷ this | GFLOPs / image |", "|---|---|---|---|---|"]
    for name, r in recs.items():
        sp = r["speed"]
        what = f"`{r['config_file']}`" if r.get("config_file") else (
            "the spec's reading (built-in recipe)" if r["method"] == "byon" else "built-in recipe")
        lines.append(f"| {name} | {what} | {sp['train_images_per_s']:.0f} | "
                     f"{base / sp['train_images_per_s']:.2f} | {sp['flops_per_image'] / 1e9:.3f} |")
    return [*lines, ""]


__all__ = ["CLAIMS", "TABLE2", "TABLES", "cost_section", "render_reproduction", "speed_rows", "table2_section",
           "verdict"]
