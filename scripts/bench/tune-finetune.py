#!/usr/bin/env python3
"""Choose the protocol's fine-tuning base lr on the val split (protocol v2, benchmarks/README.md): fine-tune one
val-held-out run (MAE's confirmed winner) with the protocol's recipe at each --blrs value, scoring on its held-out
val images, and write benchmarks/results/tune/<protocol>/finetune-<name>.json + .md. Two processes can run
side by side (each re-reads the JSON before adding its row); a finished row is skipped.
    python scripts/bench/tune-finetune.py --run RUN --blrs 5e-4 [--set mixup=0 --set cutmix=0] [--name mae]
`--set FIELD=VALUE` changes another field of the recipe (`FinetuneConfig`) for these rows; it names the row."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from byon.bench.quality import PROTOCOLS
from byon.eval.finetune import FinetuneConfig, finetune
from byon.rundir import atomic_write, write_json


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--blrs", required=True, help="comma-separated base lrs")
    ap.add_argument("--protocol", default="fmnist-cpu")
    ap.add_argument("--name", default="mae")
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE of FinetuneConfig, e.g. mixup=0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = PROTOCOLS[a.protocol]
    out = Path(a.results) / "tune" / a.protocol / f"finetune-{a.name}.json"
    rec = json.loads(out.read_text()) if out.is_file() else {"run": a.run, "protocol": a.protocol, "split": "val",
                                                              "rows": {}}
    types = {f.name: type(f.default) for f in dataclasses.fields(FinetuneConfig)}
    unknown = [s for s in a.set if s.partition("=")[0] not in types]
    if unknown:
        ap.error(f"--set {unknown[0]}: not a field of FinetuneConfig; valid: {', '.join(types)}")
    extra = {k: types[k](v) for k, _, v in (s.partition("=") for s in a.set)}
    for blr in (float(b) for b in a.blrs.split(",")):
        key = " ".join([f"{blr:g}", *(f"{k}={v}" for k, v in extra.items())])
        if key in rec["rows"]:
            continue
        cfg = dataclasses.replace(p.finetune_config(seed=0), blr=blr, **extra)
        res = finetune(a.run, p.dataset, None, cfg, split="val")
        rec = json.loads(out.read_text()) if out.is_file() else rec  # another process may have added a row
        rec["rows"][key] = {"val_top1": res["top1"], "wall_time_s": res["wall_time_s"],
                            "settings": res["settings"], "command": " ".join(sys.argv)}
        write_json(out, rec)
    rows = sorted(rec["rows"].items(), key=lambda kv: -kv[1]["val_top1"])
    lines = [f"# Fine-tuning recipe on the val split ({a.protocol})", "",
             f"`{rec['run']}` fine-tuned with the protocol's recipe ({p.finetune_epochs} epochs on "
             f"{p.finetune_subset} labelled images, layer decay {p.finetune_layer_decay}) at each base lr and the "
             "other changes a row names; top-1 on the held-out val images. The best row becomes the protocol's "
             "recipe (`Protocol.finetune_*`) for every method.", "",
             "| blr (and other changes) | val top-1 | wall s |", "|---|---|---|"]
    lines += [f"| {b} | {r['val_top1']:.2f} | {r['wall_time_s']:.0f} |" for b, r in rows]
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(out.with_suffix(".md"), lambda f: f.write(text))
    print(out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
