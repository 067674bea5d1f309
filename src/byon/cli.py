"""`byon` command line: pretrain, evaluate, export, embed, list methods."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from byon.errors import ByonError


def _pretrain_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """CLI flags → the nested override dict they stand for (only the flags that were given)."""
    from byon.config import parse_set

    o: dict[str, Any] = {}
    flags = {
        ("data", "dataset"): a.dataset, ("data", "root"): a.data_root, ("data", "subset"): a.subset,
        ("model", "preset"): a.model, ("train", "epochs"): a.epochs, ("train", "batch_size"): a.batch_size,
        ("train", "seed"): a.seed, ("train", "devices"): a.devices, ("train", "strategy"): a.strategy,
        ("train", "accelerator"): a.accelerator, ("train", "num_nodes"): a.num_nodes,
        ("train", "precision"): a.precision, ("train", "max_steps"): a.max_steps,
    }
    for (section, key), value in flags.items():
        if value is not None:
            o.setdefault(section, {})[key] = value
    if a.no_progress:
        o.setdefault("train", {})["progress"] = False
    if a.method is not None:
        o["method"] = a.method
    for section, values in parse_set(a.set or []).items():
        o.setdefault(section, {}).update(values)
    return o


def cmd_pretrain(a: argparse.Namespace) -> int:
    from byon.config import load_config, load_yaml
    from byon.engine.run import train

    overrides = _pretrain_overrides(a)
    if a.config and "method" not in overrides and "method" not in load_yaml(a.config):
        overrides["method"] = "byon"
    cfg = load_config(a.config, overrides)
    out = train(cfg, a.out, resume=a.resume)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0:
        summary = json.loads((out / "summary.json").read_text())
        ips = summary["images_per_s"]
        print(f"run directory: {out}  ({summary['steps']} steps, {summary['wall_time_s']:.0f} s"
              + (f", {ips:.0f} images/s)" if ips else ")"))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from byon.eval.frozen import evaluate

    kwargs: dict[str, Any] = {}
    if a.kind == "knn":
        kwargs = {"k": a.k, "temperature": a.temperature}
    elif a.kind == "linear":
        kwargs = {"epochs": a.linear_epochs}
    dataset = a.dataset or _run_dataset(a.run)
    res = evaluate(a.kind, a.run, dataset, root=a.data_root, subset=a.subset, seed=a.seed, **kwargs)
    line = (f"{a.kind} top-1 on {dataset}: {res['top1']:.2f} ({res['default_feature']}); "
            f"cls {res['top1_cls']:.2f}, mean {res['top1_mean']:.2f}")
    print(line)
    if a.json:
        print(json.dumps({k: v for k, v in res.items()}))
    return 0


def _run_dataset(run: str) -> str:
    from byon.engine.run import load_run

    cfg, _ = load_run(run)
    return cfg.data.dataset


def cmd_bench(a: argparse.Namespace) -> int:
    from pathlib import Path

    from byon.bench.quality import bench_quality

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    for path in bench_quality(a.protocol, methods, seeds, Path(a.runs), Path(a.results), a.data_root, a.set):
        print(path)
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from pathlib import Path

    from byon.bench.quality import bench_sweep

    seeds = [int(s) for s in a.seeds.split(",")]
    table = bench_sweep(a.protocol, [Path(c) for c in a.configs], seeds, Path(a.runs), Path(a.results),
                        a.data_root, a.set)
    print(table)
    if a.table:
        Path(a.table).write_text(table + "\n")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from pathlib import Path

    from byon.bench.report import render

    print(render(Path(a.results), Path(a.out)))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from byon.export import export_encoder

    weights, meta = export_encoder(a.run, a.out, ema=a.ema)
    print(f"wrote {weights} and {meta}")
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from byon.export import embed_folder

    npy, txt, n = embed_folder(a.run, a.images, a.out, feature=a.feature, ema=a.ema, batch_size=a.batch_size,
                               device=a.device, on_bad_file=a.on_bad_file)
    print(f"wrote {n} embeddings to {npy} (file list: {txt})")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from byon.methods import METHODS

    for name in METHODS:
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="byon", description="Denoising-based self-supervised pretraining of ViTs.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("methods", help="list the method names")
    m.set_defaults(fn=cmd_methods)

    t = sub.add_parser("pretrain", help="pretrain an encoder into a run directory")
    t.add_argument("--method")
    t.add_argument("--dataset")
    t.add_argument("--data-root")
    t.add_argument("--subset", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--model", help="encoder preset: vit-micro, vit-tiny, vit-small, vit-base")
    t.add_argument("--seed", type=int)
    t.add_argument("--devices")
    t.add_argument("--num-nodes", type=int)
    t.add_argument("--strategy")
    t.add_argument("--accelerator")
    t.add_argument("--precision")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE", help="override config values")
    t.add_argument("--resume", help="checkpoint path, or 'auto' for the newest in --out")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--out", required=True, help="run directory")
    t.set_defaults(fn=cmd_pretrain)

    e = sub.add_parser("eval", help="evaluate a run's frozen encoder")
    e.add_argument("kind", choices=["knn", "linear"])
    e.add_argument("--run", required=True)
    e.add_argument("--dataset", help="default: the run's pretraining dataset")
    e.add_argument("--data-root")
    e.add_argument("--subset", type=int, help="stratified subset of the labelled training split")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--k", type=int, default=20)
    e.add_argument("--temperature", type=float, default=0.07)
    e.add_argument("--linear-epochs", type=int, default=30)
    e.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    e.set_defaults(fn=cmd_eval)

    x = sub.add_parser("export", help="write a run's encoder as timm-layout .safetensors + architecture .json")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True, help="FILE.safetensors (FILE.json is written beside it)")
    x.add_argument("--ema", action="store_true", help="the EMA (target) encoder, for methods that keep one")
    x.set_defaults(fn=cmd_export)

    d = sub.add_parser("embed", help="features of every image in a folder under a run's encoder")
    d.add_argument("--run", required=True)
    d.add_argument("--images", required=True, help="folder of images (searched recursively)")
    d.add_argument("--out", required=True, help="FILE.npy, float32 (N, D); FILE.txt lists the images in order")
    d.add_argument("--feature", choices=["cls", "mean"], help="default: the method's")
    d.add_argument("--ema", action="store_true")
    d.add_argument("--batch-size", type=int, default=256)
    d.add_argument("--device", help="default: cuda when available, else cpu")
    d.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail")
    d.set_defaults(fn=cmd_embed)
    b = sub.add_parser("bench", help="benchmark harness (benchmarks.md protocols)")
    bsub = b.add_subparsers(dest="bench", required=True)
    q = bsub.add_parser("quality", help="pretrain + frozen evaluations, one JSON per run")
    q.add_argument("--protocol", default="fmnist-cpu")
    q.add_argument("--methods", required=True, help="comma-separated; also 'random-init' and 'pixels'")
    q.add_argument("--seeds", help="comma-separated (default: the protocol's)")
    q.add_argument("--runs", default="runs/bench")
    q.add_argument("--results", default="benchmarks/results")
    q.add_argument("--data-root")
    q.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE")
    q.set_defaults(fn=cmd_bench)
    w = bsub.add_parser("sweep", help="run a set of config files (an ablation) and tabulate them")
    w.add_argument("--configs", nargs="+", required=True, help="e.g. configs/byon/ablation/*.yaml")
    w.add_argument("--protocol", default="fmnist-cpu")
    w.add_argument("--seeds", default="0")
    w.add_argument("--runs", default="runs/bench")
    w.add_argument("--results", default="benchmarks/results")
    w.add_argument("--data-root")
    w.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE")
    w.add_argument("--table", help="also write the Markdown table to this file")
    w.set_defaults(fn=cmd_sweep)
    r = bsub.add_parser("report", help="render benchmarks/RESULTS.md and plots from the result JSONs")
    r.add_argument("--results", default="benchmarks/results")
    r.add_argument("--out", default="benchmarks/RESULTS.md")
    r.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ByonError as err:
        print(f"byon: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("byon: interrupted; the last checkpoint is kept (resume with --resume auto)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
