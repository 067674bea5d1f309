"""`byon bench tune`: a hyper-parameter grid scored on the held-out val split, never on test (benchmarks/README.md).

Each cell pretrains on the training split minus the protocol's `val_size` held-out images and scores kNN and the
linear probe on those images. The screen runs every cell for `epochs` (cheap); the confirm stage re-runs the
`confirm` best screen cells at the protocol's full length, and a screen cell whose full-length record is already on
file (the current recipe, from an earlier step) joins them at no cost, so a later step's winner has to beat it; the
winner is the best confirmed cell by val linear top-1 (val kNN breaks ties). One JSON per cell, a Markdown table per
method; every part resumes.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from byon.bench.quality import PROTOCOLS, pretrain_and_evaluate, record_config, run_pixels, twin_record
from byon.errors import ByonError, unknown
from byon.methods import METHODS
from byon.rundir import write_json

STAGES = ("screen", "confirm", "all", "table")  # table: render the finished records, run nothing


@dataclass(frozen=True)
class Axis:
    """One grid dimension: `name` and its values, each a label and the `--set` strings it applies."""

    name: str
    values: tuple[tuple[str, tuple[str, ...]], ...]


def _split_top(text: str) -> list[str]:
    """'1,[0.6,1],x' → ['1', '[0.6,1]', 'x']: commas inside brackets do not split."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _label(value: Any) -> str:
    """A file-name-safe label of a value: [0.6, 1.0] → '0.6-1.0'."""
    text = "-".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]", "", text.replace(" ", ""))


def _set_string(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, list | tuple | bool) else value}"


def parse_axis(spec: str) -> Axis:
    """'optim.blr=1.5e-4,5e-4' → an axis over one key (values split at commas outside brackets)."""
    key, sep, values = spec.partition("=")
    if not sep or "." not in key or not values.strip():
        raise ByonError(f"--grid takes SECTION.KEY=V1,V2,... (e.g. optim.blr=1.5e-4,5e-4), got '{spec}'")
    vals = _split_top(values)
    return Axis(key.strip(), tuple((_label(_yaml_value(v)), (f"{key.strip()}={v}",)) for v in vals))


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_grid_file(path: Path) -> list[Axis]:
    """A YAML grid: `axes: {NAME: [v1, v2] | {label: {section.key: value, ...}, ...}}`. A list axis is over the
    key NAME; a mapping axis names bundles of settings (e.g. an augmentation: crop scale and ratio together)."""
    if not path.is_file():
        raise ByonError(f"--grid-file '{path}' not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ByonError(f"--grid-file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    axes = doc.get("axes") if isinstance(doc, dict) else None
    if not isinstance(axes, dict) or not axes:
        raise ByonError(f"--grid-file {path}: needs a non-empty 'axes:' mapping (see configs/tune/)")
    out = []
    for name, spec in axes.items():
        if isinstance(spec, list) and spec:
            out.append(Axis(name, tuple((_label(v), (_set_string(name, v),)) for v in spec)))
        elif isinstance(spec, dict) and spec and all(isinstance(b, dict) for b in spec.values()):
            out.append(Axis(name, tuple((_label(lbl), tuple(_set_string(k, v) for k, v in b.items()))
                                        for lbl, b in spec.items())))
        else:
            raise ByonError(f"--grid-file {path}: axis '{name}' must be a list of values or a mapping of labels to "
                            f"settings")
    return out


def cells(axes: list[Axis]) -> list[tuple[str, tuple[str, ...]]]:
    """The cartesian product: (name, --set strings) per cell; name = axis=label joined by '_'."""
    out = []
    for combo in itertools.product(*(a.values for a in axes)):
        name = "_".join(f"{a.name.split('.')[-1]}={lbl}" for a, (lbl, _) in zip(axes, combo))
        out.append((name or "base", tuple(s for _, sets in combo for s in sets)))
    return out


def _score(rec: dict[str, Any]) -> tuple[float, float]:
    """Selection key: val linear top-1, then val kNN (the method's default feature)."""
    return rec["metrics"]["linear"], rec["metrics"]["knn"]


def bench_tune(protocol: str, methods: list[str], axes: list[Axis], runs: Path, results: Path,
               root: str | None = None, extra: list[str] | None = None, epochs: int | None = None,
               confirm: int = 2, seed: int = 0, stage: str = "all", shard: tuple[int, int] = (0, 1),
               config: Path | None = None, name: str | None = None,
               max_gflops: float | None = None, rerun_changed: bool = False) -> list[Path]:
    """Run the grid for every method; returns the tables written (results/tune/<protocol>/<method>.md).

    epochs: the screen's length (default the protocol's: then the screen is the confirmation); confirm: how many of
    the best screen cells to re-run at the protocol's epochs; stage: screen | confirm | all | table (the tables of
    what has finished; nothing runs); shard (i, n): this process runs cells i, i + n, ... of each stage (two
    processes share a 2-core machine), and the confirm stage needs every screen cell done. `extra`: `--set` strings
    applied to every cell (before the cell's own); `config`: a YAML config applied under the protocol (e.g. a
    method's paper recipe). `name`: the table and winner are <name>.md / <name>-winner.json instead of the method's
    (a grid that is one step of a coordinate search keeps its own table; cells of the same settings are shared
    between grids). `max_gflops`: a compute budget, training GFLOPs per image: cells above it are screened and shown
    but neither confirmed nor named the winner (the choice is the best reading the budget allows, the others are its
    reference). A cell's record trained with other settings than it would be now (the same cell name in another
    step with other `extra`) is an error; `rerun_changed` moves it to superseded/ and trains it again."""
    if protocol not in PROTOCOLS:
        raise unknown("protocol", protocol, PROTOCOLS)
    if stage not in STAGES:
        raise unknown("stage", stage, STAGES)
    p = PROTOCOLS[protocol]
    if not axes:
        raise ByonError("bench tune needs a grid: --grid SECTION.KEY=V1,V2 and/or --grid-file FILE.yaml")
    i, n = shard
    if not 0 <= i < n:
        raise ByonError(f"--shard I/N needs 0 <= I < N, got {i}/{n}")
    if max_gflops is not None and max_gflops <= 0:
        raise ByonError(f"--max-gflops is a training-GFLOPs-per-image budget and must be positive, got {max_gflops}")
    if confirm < 0:
        raise ByonError(f"--confirm counts screen cells to re-run at full length (0: screen only), got {confirm}")
    if epochs is not None and epochs < 1:
        raise ByonError(f"--epochs of the screen must be at least 1, got {epochs}")
    full = p.epochs
    screen_epochs = full if epochs is None else epochs
    grid = cells(axes)
    base = [f"data.val_size={p.val_size}", *(extra or [])]
    pixels = json.loads(run_pixels(protocol, results, root, split="val").read_text())["metrics"]
    tables = []
    for m in methods:
        if m not in METHODS and config is None:
            raise unknown("method", m, list(METHODS))
        where = results / "tune" / protocol / m
        run_root = runs / "tune" / protocol / m

        def run(cell: str, sets: tuple[str, ...], ep: int, m: str = m, where: Path = where,
                run_root: Path = run_root) -> Path:
            name = f"{cell}-e{ep}-seed{seed}"
            return pretrain_and_evaluate(m, seed, protocol, run_root / name, where / f"{name}.json", f"{m}:{cell}",
                                         root, [*base, *sets], ep, config, split="val", lowshot=False,
                                         rerun_changed=rerun_changed)

        if stage in ("screen", "all"):
            for k, (cell, sets) in enumerate(grid):
                if k % n == i:
                    run(cell, sets, screen_epochs)
        done = {cell: where / f"{cell}-e{screen_epochs}-seed{seed}.json" for cell, _ in grid}
        stem = m if name is None else name.replace("{method}", m)
        path = results / "tune" / protocol / f"{stem}.md"
        screen = {c: json.loads(f.read_text()) for c, f in done.items() if f.is_file()}
        if len(screen) < len(done):
            missing = [c for c in done if c not in screen]
            print(f"{m}: {len(missing)} screen cell(s) not finished yet (another shard?): {', '.join(missing[:4])}")
            if screen:  # the finished cells so far, so a long screen can be read (and committed) as it goes
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(tune_table(m, protocol, p.val_size, axes, screen, screen_epochs, {}, full, None, base,
                                           dict(grid), confirm, pending=missing, max_gflops=max_gflops,
                                           pixels=pixels))
                tables.append(path)
            continue
        ranked = [c for c in sorted(screen, key=lambda c: _score(screen[c]), reverse=True)
                  if not over_budget(screen[c], max_gflops)]
        if not ranked:
            raise ByonError(f"bench tune: every {m} cell is over --max-gflops {max_gflops}; raise the budget or add "
                            f"cheaper cells")
        # confirm 0: a screen-only step (its winners feed a later grid), nothing is confirmed or named
        top = ranked[:confirm] if screen_epochs != full else ranked[:1 if confirm else 0]
        sets_of = dict(grid)
        confirmed: dict[str, dict[str, Any]] = {}

        def full_record_on_file(c: str, sets: tuple[str, ...], m: str = m, where: Path = where) -> bool:
            """Cell `c` has run at full length: its own record, or a twin of its settings under another name."""
            cfg = record_config(m, seed, protocol, root, [*base, *sets], full, config)
            return (where / f"{c}-e{full}-seed{seed}.json").is_file() or twin_record(
                where, seed, cfg, "val", lowshot=False) is not None

        # cells already trained at full length are confirmed by copying, no training (a cell over the budget with
        # one on file is shown beside them, marked †, and is never the winner)
        on_file = [] if screen_epochs == full else [
            c for c in screen if c not in top and full_record_on_file(c, sets_of[c])]
        for c in on_file:  # a copy of the record on file, in every stage (and shard): nothing trains
            run(c, sets_of[c], full)
        if screen_epochs != full and stage in ("confirm", "all"):
            for k, c in enumerate(top):
                if k % n == i:
                    run(c, sets_of[c], full)
        if screen_epochs == full:
            confirmed = {c: screen[c] for c in top}
        else:
            paths = {c: where / f"{c}-e{full}-seed{seed}.json" for c in [*top, *on_file]}
            confirmed = {c: json.loads(f.read_text()) for c, f in paths.items() if f.is_file()}
        eligible = [c for c in confirmed if not over_budget(confirmed[c], max_gflops)]
        winner = (max(eligible, key=lambda c: _score(confirmed[c])) if top and all(c in confirmed for c in top)
                  else None)
        table = tune_table(m, protocol, p.val_size, axes, screen, screen_epochs, confirmed, full, winner, base,
                           sets_of, len(top), max_gflops=max_gflops, pixels=pixels, on_file=on_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
        if winner is not None:
            write_json(results / "tune" / protocol / f"{stem}-winner.json",
                         {"method": m, "protocol": protocol, "cell": winner, "sets": [*base, *sets_of[winner]],
                          "val": confirmed[winner]["metrics"], "selected_by": "val linear top-1, then val kNN"
                          + (f", among cells of at most {max_gflops} training GFLOPs/img" if max_gflops else ""),
                          "screen_epochs": screen_epochs, "epochs": full})
        tables.append(path)
    return tables


def over_budget(rec: dict[str, Any], max_gflops: float | None) -> bool:
    """Whether a cell's training FLOPs per image exceed the budget (a cell without a FLOPs count never does)."""
    return max_gflops is not None and (rec.get("flops_per_image") or 0) / 1e9 > max_gflops


def tune_table(method: str, protocol: str, val_size: int, axes: list[Axis], screen: dict[str, dict[str, Any]],
               screen_epochs: int, confirmed: dict[str, dict[str, Any]], full: int, winner: str | None,
               base: list[str], sets_of: dict[str, tuple[str, ...]], n_confirm: int,
               pending: Sequence[str] = (), max_gflops: float | None = None,
               pixels: dict[str, Any] | None = None, on_file: Sequence[str] = ()) -> str:
    """Markdown: the screen's cells by val linear top-1, the confirmation runs, the winner and its settings;
    `pending`: screen cells still running (the table is then a partial one and names no winner); cells over
    `max_gflops` are marked †; `pixels`: raw pixels' scores on the same val split (`run_pixels`), a reference;
    `on_file`: confirmed cells whose full-length record was already on file (copied, not re-run)."""
    def row(c: str, r: dict[str, Any]) -> str:
        mt = r["metrics"]
        c = f"{c} †" if over_budget(r, max_gflops) else c
        return (f"| {c} | {mt['linear']:.2f} | {mt['knn']:.2f} | {mt.get('linear_cls') or float('nan'):.2f} | "
                f"{mt.get('knn_cls') or float('nan'):.2f} | {r.get('images_per_s') or 0:.0f} | "
                f"{(r.get('flops_per_image') or float('nan')) / 1e9:.3f} |")

    # img/s depends on what else ran beside the cell; the training FLOPs per image are its cost
    head = ["| cell | val linear | val kNN | val linear CLS | val kNN CLS | img/s | GFLOPs/img |",
            "|---|---|---|---|---|---|---|"]
    lines = [f"# Tuning {method} on {protocol}: val split", "",
             f"Pretraining on the training split minus {val_size} held-out images (stratified, `data.val_size`); "
             f"kNN and linear top-1 of the method's default feature on those {val_size} images. Selection: val "
             f"linear, then val kNN; the test split is not read. Axes: "
             + "; ".join(f"`{a.name}` ∈ {{{', '.join(lbl for lbl, _ in a.values)}}}" for a in axes) + "."
             + (f" Budget: at most {max_gflops} training GFLOPs per image; † cells exceed it and are shown as a "
                f"reference only (never confirmed, never the winner)." if max_gflops else "")
             + (f" Raw pixels on the same split (no model): kNN {pixels['knn_raw']:.2f}, linear "
                f"{pixels['linear_raw']:.2f}." if pixels else ""),
             "", f"## Screen ({screen_epochs} epochs)", "", *head]
    lines += [row(c, screen[c]) for c in sorted(screen, key=lambda c: _score(screen[c]), reverse=True)]
    if pending:
        lines += ["", f"**Screen unfinished**: {len(pending)} cell(s) still to run ({', '.join(pending)}); no "
                      "confirmation and no winner until every cell has run."]
        return "\n".join(lines) + "\n"
    if n_confirm == 0:
        lines += ["", "Screen only (`--confirm 0`): a step whose best cells feed a later grid; no confirmation, no "
                      "winner."]
        return "\n".join(lines) + "\n"
    if screen_epochs != full and confirmed:
        extra = len([c for c in on_file if c in confirmed])
        lines += ["", f"## Confirmation ({full} epochs, the best {n_confirm} screen cells"
                      + (f", and {extra} whose {full}-epoch record was already on file, not re-run" if extra else "")
                      + ")", "", *head]
        lines += [row(c, confirmed[c]) for c in sorted(confirmed, key=lambda c: _score(confirmed[c]), reverse=True)]
    elif screen_epochs != full:
        lines += ["", f"Confirmation ({full} epochs, the best {n_confirm} screen cells): not run yet."]
    if winner is not None:
        lines += ["", f"**Winner: `{winner}`** — `--set {' '.join([*base, *sets_of[winner]])}`"]
    else:
        best = max(screen, key=lambda c: _score(screen[c]))
        lines += ["", f"Winner: not yet (the confirmation runs are unfinished). Best screen cell: `{best}`."]
    return "\n".join(lines) + "\n"


__all__ = ["Axis", "bench_tune", "cells", "load_grid_file", "parse_axis", "tune_table"]
