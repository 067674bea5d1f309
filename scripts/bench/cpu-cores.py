#!/usr/bin/env python3
"""What `train.devices: auto` buys on this CPU (issue 22): `byon pretrain` img/s in three layouts of the same run.

  one-thread  --devices 1 --set train.num_threads=1     one process, one thread (the old default's speed records)
  threads     --devices 1 --set train.num_threads=<cores>  one process using every core
  auto        (no --devices)                            the default: one DDP process per physical core x 1 thread

Each is the fmnist-cpu protocol's config for the method (configs/<method>.yaml where it exists, else
configs/<method>/default.yaml) cut to --steps steps, same global batch 256. img/s is the run's own steady-state
figure (summary.json `images_per_s`: the mean over its logging windows after the first), so process start-up and
DDP spawning are not counted. Rounds interleave the layouts (A B C, C B A, ...) so machine drift hits all alike;
`quiet` records whether other processes used at most 10 % of the CPU over each run: /proc/stat's busy time minus
this script's and its run's process tree's (DDP's second rank included).
Writes benchmarks/results/cpu-cores.json and benchmarks/cpu-cores.md. Run it on an otherwise idle machine:

    PYTHONPATH=$PWD/src .venv/bin/python scripts/bench/cpu-cores.py --methods mae,byon
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from byon.bench.speed import BUSY_SHARE, MachineLoad
from byon.engine.processes import physical_cores
from byon.provenance import git_commit, git_dirty
from byon.rundir import atomic_write


def layouts(cores: int) -> dict[str, tuple[list[str], list[str]]]:
    """layout -> (its flags, its --set values)"""
    return {"one-thread": (["--devices", "1"], ["train.num_threads=1"]),
            "threads": (["--devices", "1"], [f"train.num_threads={cores}"]),
            "auto": ([], [])}


def config_for(method: str) -> str:
    flat = Path(f"configs/{method}.yaml")
    return str(flat if flat.exists() else Path(f"configs/{method}/default.yaml"))


def one_run(method: str, layout: tuple[list[str], list[str]], steps: int, workdir: Path) -> dict[str, Any]:
    out = workdir / f"run-{len(list(workdir.iterdir()))}"
    flags, sets = layout
    cmd = [sys.executable, "-m", "byon.cli", "pretrain", "--config", config_for(method), "--no-progress",
           "--out", str(out), *flags, "--set", *sets, f"train.max_steps={steps}", "train.log_every_n_steps=10"]
    load = MachineLoad(every=0.2)  # this script's and the run's whole process tree are "own" CPU
    load.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    load.stop()
    share = load.share
    if proc.returncode:
        sys.exit(f"cpu-cores: {shlex.join(cmd)} failed:\n{stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    first = stdout.splitlines()[0] if stdout else ""
    return {"images_per_s": summary["images_per_s"], "world_size": summary.get("world_size"),
            "hardware": summary.get("hardware"), "other_cpu_share": share,
            "first_line": first, "command": shlex.join(cmd[2:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="mae")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="training steps of each run (the first 10 are not timed)")
    ap.add_argument("--out", default="benchmarks/results/cpu-cores.json")
    ap.add_argument("--md", default="benchmarks/cpu-cores.md", help="'' to write no note")
    a = ap.parse_args()
    cores = physical_cores()
    names = list(layouts(cores))
    record: dict[str, Any] = {"cores": cores, "logical_cpus": os.cpu_count(), "steps": a.steps, "rounds": a.rounds,
                              "machine": platform.processor() or platform.machine(), "methods": {}}
    with tempfile.TemporaryDirectory(prefix="byon-cpu-cores-") as tmp:
        for method in a.methods.split(","):
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for r in range(a.rounds):
                for n in (names if r % 2 == 0 else names[::-1]):
                    res = one_run(method, layouts(cores)[n], a.steps, Path(tmp))
                    runs[n].append(res)
                    print(f"{method} round {r} {n}: {res['images_per_s']:.1f} img/s "
                          f"(others used {100 * (res['other_cpu_share'] or 0):.0f} % CPU)", flush=True)
            med = {n: statistics.median(x["images_per_s"] for x in runs[n]) for n in names}
            record["methods"][method] = {
                "config": config_for(method), "runs": runs, "median_images_per_s": med,
                "speedup_over_one_thread": {n: med[n] / med["one-thread"] for n in names},
                "quiet": all((x["other_cpu_share"] or 0) <= BUSY_SHARE for n in names for x in runs[n])}
    record |= {"commit": git_commit(), "dirty": git_dirty(),
               "command": shlex.join(["scripts/bench/cpu-cores.py", *sys.argv[1:]])}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(a.out, lambda f: f.write(text.encode()), "cpu-cores record")
    if a.md:
        lines = ["# `train.devices: auto` on this CPU", "",
                 f"Rendered by `{record['command']}` ({cores} physical cores, {a.steps} steps per run, {a.rounds} "
                 "interleaved rounds, median img/s of the run's steady state; global batch 256 in every layout).", "",
                 "| method | one process × 1 thread | one process × all cores | auto: DDP, a process per core × 1 "
                 "thread | auto / one thread | quiet |", "|---|---|---|---|---|---|"]
        for m, r in record["methods"].items():
            md, s = r["median_images_per_s"], r["speedup_over_one_thread"]
            lines.append(f"| {m} | {md['one-thread']:.1f} | {md['threads']:.1f} ({s['threads']:.2f}×) | "
                         f"{md['auto']:.1f} | {s['auto']:.2f}× | {'yes' if r['quiet'] else 'no'} |")
        note = "\n".join(lines) + "\n"
        atomic_write(a.md, lambda f: f.write(note.encode()), "cpu-cores note")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
