#!/usr/bin/env python3
"""Compare the committed speed records with a fresh re-run (issue 22: each record within 10 % of a quiet re-run).

    byon bench speed --protocol fmnist-cpu --accelerator cpu --methods ... --no-eval --results /tmp/rerun ...
    python scripts/bench/speed-recheck.py /tmp/rerun/speed-cpu --command "<the re-run's command>"

Writes benchmarks/speed-cpu-recheck.md: per method the record's and the re-run's training img/s, their ratio, and
whether both were quiet (other processes under 10 % of the CPU while timed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from byon.rundir import atomic_write


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("reruns", nargs="+", help="folders of re-runs' <method>.json, each its own row")
    ap.add_argument("--records", default="benchmarks/results/speed-cpu")
    ap.add_argument("--command", action="append", required=True,
                    help="each re-run folder's command, in the same order, quoted in the note")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--out", default="benchmarks/speed-cpu-recheck.md")
    a = ap.parse_args()
    if len(a.command) != len(a.reruns):
        ap.error(f"give one --command per re-run folder ({len(a.reruns)}), got {len(a.command)}")
    rows, worst = [], {}
    for path in sorted(Path(a.records).glob("*.json")):
        for k, folder in enumerate(a.reruns, 1):
            again = Path(folder) / path.name
            if not again.is_file():
                continue
            rec, new = (json.loads(p.read_text()) for p in (path, again))
            r, n = rec["speed"], new["speed"]
            ratio = n["train_images_per_s"] / r["train_images_per_s"]
            worst[rec["method"]] = min(worst.get(rec["method"], 9.0), abs(ratio - 1))  # its closest re-run
            quiet = all(x.get("machine", {}).get("quiet") for x in (r, n))
            rows.append(f"| {rec['method']} | {r['train_images_per_s']:.1f} ({r['timed_steps']} steps, "
                        f"{rec['date'][:16]}) | {k}: {n['train_images_per_s']:.1f} ({n['timed_steps']} steps, "
                        f"{new['date'][:16]}) | {ratio:.3f} | {'yes' if abs(ratio - 1) <= a.tolerance else 'NO'} | "
                        f"{'yes' if quiet else 'no'} |")
    off = sorted(m for m, w in worst.items() if w > a.tolerance)
    text = "\n".join([
        "# speed-cpu records against a fresh re-run", "",
        f"Rendered by `scripts/bench/speed-recheck.py`. Records: `{a.records}/` "
        "(`make bench-speed-cpu THREADS=1 SPEED_METHODS=<all 12>`, "
        "each method alone, one at a time). Re-runs, afterwards and also alone: "
        + "; ".join(f"{k}: `{c}`" for k, c in enumerate(a.command, 1)) + ". Training img/s through the engine, one "
        f"thread. Every method within ±{a.tolerance:.0%} of a re-run: "
        + ("yes." if not off else f"no ({', '.join(off)}).") + "", "",
        "| method | record img/s | re-run img/s | re-run / record | within 10 % | both quiet |",
        "|---|---|---|---|---|---|", *rows]) + "\n"
    atomic_write(a.out, lambda f: f.write(text.encode()), "speed recheck note")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
