#!/usr/bin/env python3
"""Training FLOPs per image (forward + backward, torch.utils.flop_counter on one step of the real method) of
BYON's candidate readings beside DiffMAE, SimMIM, MAE and MaskDiT at the fmnist-cpu shapes (vit-micro, 28 px,
1 channel) -> benchmarks/results/flops/byon-readings.json; `byon bench report` renders it in
benchmarks/byon-reproduction.md. Seconds on a CPU; no data is read.
    python scripts/bench/flops-byon-readings.py"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from byon.data import DataInfo
from byon.engine.run import flops_per_image
from byon.methods import build_method, load_config
from byon.provenance import git_commit

# (method, config file or None for the built-in recipe, --set overrides); byon's built-in recipe is the spec's
# reading, configs/byon/default.yaml the val-chosen one; configs/<method>.yaml a baseline's val-tuned recipe (its
# mask ratio can change the cost). × DiffMAE is against DiffMAE's built-in (paper) recipe, the first row
ROWS = [("diffmae", None, []), ("diffmae", "configs/diffmae.yaml", []), ("simmim", None, []),
        ("simmim", "configs/simmim.yaml", []), ("mae", None, []), ("mae", "configs/mae.yaml", []),
        ("maskdit", None, []),
        ("byon", None, []), ("byon", None, ["byon.encoder_tokens=visible"]),
        ("byon", None, ["byon.encoder_tokens=visible", "byon.decoder_depth=1"]),
        ("byon", None, ["byon.decoder_depth=1"]), ("byon", None, ["byon.contrastive=false"]),
        ("byon", "configs/byon/default.yaml", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/flops/byon-readings.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    info = DataInfo(name="fashion-mnist", img_size=28, in_chans=1, num_classes=10, mean=(0.286,), std=(0.353,))
    rows = []
    for method, config, sets in ROWS:
        cfg = load_config(config, {"method": method, "model": {"preset": "vit-micro"}}, sets=sets)
        m, _ = build_method(cfg, info)
        rows.append({"method": method, "config": config, "sets": sets,
                     "gflops_per_image": round(flops_per_image(m, info, cfg) / 1e9, 4)})
    base = next(r["gflops_per_image"] for r in rows if r["method"] == "diffmae")
    for r in rows:
        r["over_diffmae"] = round(r["gflops_per_image"] / base, 3)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"protocol": "fmnist-cpu shapes (vit-micro, 28 px, 1 channel)", "commit": git_commit(),
                               "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    for r in rows:
        label = " ".join(r["sets"]) or r["config"] or "(built-in recipe)"
        print(f"{r['method']:8s} {label:55s} {r['gflops_per_image']:.3f} GFLOPs/img {r['over_diffmae']:.2f}x DiffMAE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
