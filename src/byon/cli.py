"""`byon` command line: pretrain, evaluate, export, embed, list methods, shard data.

The one module whose commands import their (torch-heavy) modules when they run: `byon --help` and a bad flag
answer in a fraction of a second."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from byon.errors import ByonError, Interrupted

ENCODERS = ("online", "ema")  # = byon.export.ENCODERS, not imported here: the CLI parses its flags without torch
ENCODER_HELP = ("online | ema: that encoder of a method that keeps both (byon and byol evaluate the online one by "
                "default, ijepa and njepa the EMA target); default: the method's eval encoder")


def _pretrain_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """CLI flags → the nested override dict they stand for (only the flags that were given)."""
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
    return o


def cmd_pretrain(a: argparse.Namespace) -> int:
    from byon.config import load_yaml
    from byon.engine.run import train
    from byon.methods import load_config

    overrides = _pretrain_overrides(a)
    if a.config and "method" not in overrides and "method" not in load_yaml(a.config):
        overrides["method"] = "byon"
    cfg = load_config(a.config, overrides, sets=a.set or [])
    out = train(cfg, a.out, resume=a.resume, overwrite=a.overwrite, per_core=a.own_command_line)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0:
        summary = json.loads((out / "summary.json").read_text())
        ips = summary["images_per_s"]
        print(f"run directory: {out}  ({summary['steps']} steps, {summary['wall_time_s']:.0f} s"
              + (f", {ips:.0f} images/s)" if ips else ")"))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Every evaluation writes <run>/eval/<kind>-<dataset>.json, prints a one-line summary and, with --json,
    the result as one JSON object on the last line."""
    from byon.eval import frozen

    dataset = a.dataset or _run_dataset(a.run)
    where = dict(root=a.data_root, seed=a.seed)
    frozen_kinds = ("knn", "linear", "lowshot")
    if getattr(a, "encoder", None) and a.kind not in frozen_kinds:
        raise ByonError(f"--encoder applies to the frozen evaluations ({', '.join(frozen_kinds)}), not to "
                        f"'{a.kind}'")
    readout = _readout(a.run, a.set or [])
    if readout and a.kind == "probe-grid":
        raise ByonError("--set chooses the read-out of kNN/linear/lowshot/finetune; the probe grid reads every "
                        "block at every --timesteps, so drop --set")
    # the frozen evaluations' encoder, read-out, query split and checkpoint
    chosen = dict(encoder=a.encoder, readout=readout, split=a.split, checkpoint=a.checkpoint)
    on = f"{dataset}{' val' if a.split == 'val' else ''}"
    if a.kind == "finetune":
        from byon.eval.finetune import FinetuneConfig, finetune

        fields = ("epochs", "batch_size", "blr", "layer_decay", "weight_decay", "warmup_epochs", "min_lr", "mixup",
                  "cutmix", "smoothing", "drop_path", "randaug", "pool", "subset", "seed", "device")
        res = finetune(a.run, dataset, a.data_root,
                       FinetuneConfig(**{f: getattr(a, f) for f in fields if getattr(a, f) is not None}),
                       readout=readout, split=a.split, checkpoint=a.checkpoint)
        line = (f"finetune top-1 on {on}: {res['top1']:.2f} ({res['pool']} pool, {res['steps']} steps, "
                f"RandAugment {res['randaugment']})")
    elif a.kind == "probe-grid":
        from byon.eval.probe_grid import probe_grid

        if a.split != "test":
            raise ByonError("the probe grid scores on the test split only; drop --split")
        res = probe_grid(a.run, dataset, layers=a.layers, timesteps=a.timesteps, subset=a.subset,
                         epochs=a.linear_epochs, device=a.device, checkpoint=a.checkpoint, **where)
        b = res["best"]
        line = (f"probe grid on {dataset}: best block {b['layer']} at t={b['t']}, top-1 {b['top1']:.2f} "
                f"({len(res['layers'])} blocks x {len(res['timesteps'])} timesteps; eval/probe-grid-{dataset}.png)")
    elif a.kind == "lowshot":
        shots = tuple(_ints(a.shots, "--shots"))
        res = frozen.evaluate_lowshot(a.run, dataset, shots=shots, draws=a.draws, epochs=a.epochs, **chosen,
                                      **where)
        ft = res["default_feature"]
        line = f"lowshot top-1 on {on} ({ft}, {a.draws} draws): " + ", ".join(
            f"{n}-shot {res[str(n)][ft]['mean']:.2f} ± {res[str(n)][ft]['std']:.2f}" for n in shots)
    elif a.kind == "linear" and a.heads == "grid":
        blrs = tuple(_floats(a.lrs, "--lrs")) if a.lrs else None
        res = frozen.evaluate_linear_grid(a.run, dataset, subset=a.subset, blrs=blrs, blocks=a.blocks,
                                          epochs=a.linear_epochs, **chosen, **where)
        b = res["best"]
        line = (f"linear grid top-1 on {on}: {b['top1']:.2f} ({b['feature']}, blr {b['blr']:g}: of "
                f"{len(res['heads'])} heads, the one chosen on {res['chosen_on']}); per feature: "
                + ", ".join(f"{ft} {r['top1']:.2f}" for ft, r in res["best_per_feature"].items()))
    else:
        kwargs = {"k": a.k, "temperature": a.temperature} if a.kind == "knn" else {"epochs": a.linear_epochs}
        res = frozen.evaluate(a.kind, a.run, dataset, subset=a.subset, **chosen, **where, **kwargs)
        line = (f"{a.kind} top-1 on {on}: {res['top1']:.2f} ({res['default_feature']}); "
                + ", ".join(f"{ft} {res[f'top1_{ft}']:.2f}" for ft in res["features"]))
    print(line)
    if a.json:
        print(json.dumps(res))
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ByonError(f"{flag} expects comma-separated integers (e.g. 10,100), got '{text}'") from None


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ByonError(f"{flag} expects comma-separated numbers (e.g. 0.01,0.1,1), got '{text}'") from None


def _readout(run: str, items: list[str]) -> dict[str, Any] | None:
    """`byon eval --set METHOD.KEY=VALUE ...` → the read-out settings {KEY: VALUE} of the run's method."""
    if not items:
        return None
    from byon.config import parse_set
    from byon.rundir import config_method

    nested = parse_set(items)
    method = config_method(Path(run) / "config.yaml")
    if method is None:
        raise ByonError(f"run directory '{run}' has no readable config.yaml; pass the --out of a byon pretrain run")
    others = sorted(s for s in nested if s != method)
    if others:
        raise ByonError(f"eval --set takes read-out settings of the run's method ({method}.KEY=VALUE), got "
                        f"section '{others[0]}'")
    return nested.get(method)


def _run_dataset(run: str) -> str:
    """The run's pretraining dataset: from its config.yaml (the evaluation then reads the checkpoint once), else
    from its checkpoint."""
    from byon.methods import load_config
    from byon.rundir import load_run

    path = Path(run) / "config.yaml"
    if path.is_file():
        try:
            return load_config(path).data.dataset
        except ByonError:
            pass  # a config this version cannot read: the checkpoint's own settles it (or says what is wrong)
    cfg, _ = load_run(run)
    return cfg.data.dataset


def cmd_bench(a: argparse.Namespace) -> int:
    from byon.bench.quality import bench_quality

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    recipes = None if a.recipes == "none" else Path(a.recipes)
    for path in bench_quality(a.protocol, methods, seeds, Path(a.runs), Path(a.results), a.data_root, a.set,
                              a.tag, recipes, a.rerun_changed):
        print(path)
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from byon.bench.quality import bench_sweep

    seeds = [int(s) for s in a.seeds.split(",")]
    table = bench_sweep(a.protocol, [Path(c) for c in a.configs], seeds, Path(a.runs), Path(a.results),
                        a.data_root, a.set, a.rerun_changed)
    print(table)
    if a.table:
        Path(a.table).write_text(table + "\n")
    return 0


def cmd_tune(a: argparse.Namespace) -> int:
    from pathlib import Path

    from byon.bench.tune import bench_tune, load_grid_file, parse_axis

    axes = [parse_axis(g) for g in a.grid] + [ax for f in a.grid_file for ax in load_grid_file(Path(f))]
    i, sep, n = a.shard.partition("/")
    if not sep or not i.isdigit() or not n.isdigit():
        raise ByonError(f"--shard takes I/N (e.g. 0/2), got '{a.shard}'")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for path in bench_tune(a.protocol, methods, axes, Path(a.runs), Path(a.results), a.data_root, a.set, a.epochs,
                           a.confirm, a.seed, a.stage, (int(i), int(n)), Path(a.config) if a.config else None,
                           a.name, a.max_gflops, a.rerun_changed):
        print(path)
    return 0


def cmd_speed(a: argparse.Namespace) -> int:
    from byon.bench.speed import bench_speed

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for path in bench_speed(methods, a.protocol, Path(a.runs), Path(a.results), steps=a.steps, warmup=a.warmup,
                            root=a.data_root, extra=a.set, accelerator=a.accelerator, evaluate=a.eval,
                            profile_steps=a.profile_steps, allow_busy=a.allow_busy,
                            config=Path(a.config) if a.config else None):
        print(path)
    return 0


def cmd_bench_data(a: argparse.Namespace) -> int:
    from byon.bench.data import bench_data

    workers = [int(w) for w in a.workers.split(",") if w.strip()]
    source = f"--images {a.images}" if a.images else f"--generate {a.generate} --sizes {a.sizes[0]} {a.sizes[1]}"
    command = (f"byon bench data {source} --image-size {a.image_size} --workers {a.workers} --batch {a.batch}"
               + ("" if a.shards else " --no-shards") + ("" if a.flops else " --no-flops") + f" --out {a.out}")
    r = bench_data(Path(a.out), a.images, a.generate, tuple(a.sizes), a.image_size, workers, a.batch, a.shards,
                   a.flops, command)
    for row in r["rows"]:
        print(f"{row['source']:6s} {row['workers']} worker(s): {row['images_per_s']:8.1f} images/s "
              f"({row['per_worker_images_per_s']:.1f} per worker, steady)")
    if "estimate" in r:
        print(f"estimate: ~{r['estimate']['workers_per_gpu']} workers per H100 for BYON at ViT-B")
    print(Path(a.out), Path(a.out).with_suffix(".md"))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from byon.bench.report import render
    from byon.bench.reproduction import render_reproduction

    print(render(Path(a.results), Path(a.out)))
    print(render_reproduction(Path(a.results), "fmnist-cpu", Path(a.out).parent / "byon-reproduction.md"))
    return 0


def _encoder_choice(a: argparse.Namespace) -> str | None:
    """--ema is --encoder ema."""
    if a.ema and a.encoder not in (None, "ema"):
        raise ByonError(f"--ema and --encoder {a.encoder} contradict each other; give one of them")
    return "ema" if a.ema else a.encoder


def cmd_export(a: argparse.Namespace) -> int:
    from byon.export import export_encoder

    weights, meta = export_encoder(a.run, a.out, encoder=_encoder_choice(a), checkpoint=a.checkpoint)
    print(f"wrote {weights} and {meta}")
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from byon.export import embed_folder

    npy, txt, n = embed_folder(a.run, a.images, a.out, feature=a.feature, encoder=_encoder_choice(a),
                               batch_size=a.batch_size, device=a.device, on_bad_file=a.on_bad_file,
                               checkpoint=a.checkpoint)
    print(f"wrote {n} embeddings to {npy} (file list: {txt})")
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    from byon.sample import sample_run

    print(f"wrote {sample_run(a.run, a.n, a.sampler, a.steps, a.seed, a.out, a.device)}")
    return 0


def cmd_analyze(a: argparse.Namespace) -> int:
    from byon import analysis

    common = {"out": a.out, "dataset": a.dataset, "root": a.data_root, "split": a.split, "seed": a.seed,
              "device": a.device}
    if a.analysis == "attention-distance":
        res = analysis.attention_distance(a.run, n=a.n, batch_size=a.batch_size, **common)
    elif a.analysis == "attention-maps":
        res = analysis.attention_maps(a.run, n=a.n, **common)
    elif a.analysis == "align-uniform":
        res = analysis.align_uniform(a.run, pairs=a.pairs, t=a.t, sigma=a.sigma, n=a.n, batch_size=a.batch_size,
                                     **common)
    elif a.analysis == "reconstructions":
        res = analysis.reconstructions(a.run, n=a.n, **common)
    else:
        res = analysis.embedding_2d(a.run, projection=a.method, feature=a.feature, n=a.n or None, **common)
    print(res["summary"])
    print(f"wrote {res['files']['png']} and {res['files']['json']}")
    return 0


def cmd_shard(a: argparse.Namespace) -> int:
    from byon.data.shards import write_shards

    meta = write_shards(a.images, a.out, a.shard_size)
    for split, entry in meta["splits"].items():
        print(f"{split}: {entry['images']} images from {entry['source']} in {len(entry['shards'])} shard(s) under "
              f"{os.path.join(a.out, split)}")
    print(f"pretrain on them with: byon pretrain --dataset shards --data-root {a.out} ...")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from byon.methods import METHODS

    for name in METHODS:
        print(name)
    return 0


def _checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="last|epoch-N|PATH",
                        help="which of the run's checkpoints: last, epoch-N (epoch N's newest save) or a .ckpt path "
                             "(default: the newest); results of another than the default are named after it")


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load checkpoints that need pickled code (which can run anything): only for files "
                             "from someone you trust; byon's own checkpoints never need it")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="byon", description="Denoising-based self-supervised pretraining of ViTs.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("methods", help="list the method names")
    m.set_defaults(fn=cmd_methods)

    dp = sub.add_parser("data", help="prepare data: write an image folder into tar shards for many nodes")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("shard", help="write an image folder (train, and test/val when present) into tar shards")
    ds.add_argument("--images", required=True, help="the image folder (class sub-folders give labels)")
    ds.add_argument("--out", required=True, help="new folder for the shards (shards.json, <split>/shard-*.tar)")
    ds.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    ds.set_defaults(fn=cmd_shard)

    t = sub.add_parser("pretrain", help="pretrain an encoder into a run directory")
    t.add_argument("--method")
    t.add_argument("--dataset")
    t.add_argument("--data-root")
    t.add_argument("--subset", type=int)
    t.add_argument("--epochs", type=int, help="passes over the training split (0: no training at all, the "
                                                 "untrained random-init reference; default 8)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--model", help="encoder preset: vit-micro, vit-tiny, vit-small, vit-base")
    t.add_argument("--seed", type=int)
    t.add_argument("--devices", help="devices (processes) to train on; default auto: on a multi-core CPU one DDP "
                                     "process per core, 1 thread each, splitting the batch; otherwise 1")
    t.add_argument("--num-nodes", type=int)
    t.add_argument("--strategy")
    t.add_argument("--accelerator")
    t.add_argument("--precision")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE", help="override config values")
    t.add_argument("--resume", help="checkpoint path, or 'auto' for the newest in --out (a fresh start when "
                                    "it has none)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--out", required=True, help="run directory: new or empty, unless --resume or --overwrite")
    t.add_argument("--overwrite", action="store_true", help="delete the contents of a non-empty --out first")
    _trust_flag(t)
    t.set_defaults(fn=cmd_pretrain)

    e = sub.add_parser("eval", help="evaluate a run's encoder: frozen (knn, linear, lowshot) or fine-tuned")
    esub = e.add_subparsers(dest="kind", required=True)
    ec = argparse.ArgumentParser(add_help=False)
    ec.add_argument("--run", required=True)
    ec.add_argument("--dataset", help="default: the run's pretraining dataset")
    ec.add_argument("--data-root")
    ec.add_argument("--seed", type=int, default=0)
    ec.add_argument("--encoder", choices=ENCODERS, help=ENCODER_HELP)
    ec.add_argument("--split", choices=["test", "val"], default="test",
                    help="val: score on the run's held-out val split (pretrained with data.val_size > 0) against "
                         "the rest of the training split -- for choosing settings; test: report (default)")
    ec.add_argument("--set", nargs="*", metavar="METHOD.KEY=VALUE",
                    help="read-out settings of the run's method, e.g. ddae.feature_block=9 ddae.feature_t=1, "
                         "ldae.probe_t=50, maskdit.probe_sigma=0.1, ijepa.eval_encoder=context (results go to "
                         "eval/<kind>-<dataset>-<settings>.json)")
    ec.add_argument("--json", action="store_true", help="also print the result as one JSON object (last line); "
                                                         "it is always written to <run>/eval/<kind>-<dataset>.json, "
                                                         "with the settings that differ from the defaults "
                                                         "appended to the name (e.g. knn-<dataset>-k=100.json)")
    _trust_flag(ec)
    _checkpoint_flag(ec)
    ek = esub.add_parser("knn", parents=[ec], help="weighted kNN on frozen features")
    ek.add_argument("--subset", type=int, help="stratified subset of the labelled training split")
    ek.add_argument("--k", type=int, default=20)
    ek.add_argument("--temperature", type=float, default=0.07)
    el = esub.add_parser("linear", parents=[ec], help="linear probe(s) on frozen features")
    el.add_argument("--subset", type=int, help="stratified subset of the labelled training split")
    el.add_argument("--linear-epochs", type=int, default=30)
    el.add_argument("--heads", choices=["single", "grid"], default="single",
                    help="grid: DINOv2-style heads for cls, mean, last-blocks cls (+mean) x --lrs, in one pass")
    el.add_argument("--lrs", help="grid base lrs at batch 256, comma-separated (default 0.01,0.03,0.1,0.3,1)")
    el.add_argument("--blocks", type=int, default=4, help="grid: concatenate the CLS of this many last blocks")
    eo = esub.add_parser("lowshot", parents=[ec], help="linear probe on n labelled images per class")
    eo.add_argument("--shots", default="10,100", help="images per class, comma-separated")
    eo.add_argument("--draws", type=int, default=5, help="seeded draws per shot count (mean ± std)")
    eo.add_argument("--epochs", type=int, default=100)
    ef = esub.add_parser("finetune", parents=[ec], help="fine-tune the encoder end to end (timm recipe)",
                         description="Fine-tune the run's eval encoder end to end: layer-wise lr decay, warm-up + "
                                     "cosine, mixup/cutmix + label smoothing, RandAugment (RGB only), drop-path. "
                                     "Unset options take FinetuneConfig's defaults (byon/eval/finetune.py).")
    ef.add_argument("--subset", type=int, help="stratified subset of the labelled training split")
    ef.add_argument("--epochs", type=int)
    ef.add_argument("--batch-size", type=int)
    ef.add_argument("--blr", type=float, help="lr = blr * batch_size / 256")
    ef.add_argument("--layer-decay", type=float, help="layer-wise lr decay (1: off)")
    ef.add_argument("--weight-decay", type=float)
    ef.add_argument("--warmup-epochs", type=float)
    ef.add_argument("--min-lr", type=float)
    ef.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    ef.add_argument("--cutmix", type=float, help="cutmix alpha (0: off)")
    ef.add_argument("--smoothing", type=float, help="label smoothing")
    ef.add_argument("--drop-path", type=float, help="stochastic depth of the last block")
    ef.add_argument("--randaug", help="timm RandAugment spec, RGB images only ('' : off)")
    ef.add_argument("--pool", choices=["cls", "mean"], help="default: the method's feature")
    ef.add_argument("--device", help="default: cuda when available, else cpu")
    eg = esub.add_parser("probe-grid", parents=[ec], help="linear probe per block x noise timestep (DDAE figure 2)")
    eg.add_argument("--layers", default="all", help="'all' or comma-separated blocks (1 = shallowest)")
    eg.add_argument("--timesteps", default="1,10,25,50,100,200", help="DDPM timesteps, comma-separated")
    eg.add_argument("--subset", type=int, help="stratified subset of the labelled training split")
    eg.add_argument("--linear-epochs", type=int, default=30)
    eg.add_argument("--device", help="default: cuda when available, else cpu")
    e.set_defaults(fn=cmd_eval)

    x = sub.add_parser("export", help="write a run's encoder as timm-layout .safetensors + architecture .json")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True, help="FILE.safetensors (FILE.json is written beside it)")
    x.add_argument("--ema", action="store_true", help="the EMA (target) encoder, for methods that keep one")
    x.add_argument("--encoder", choices=ENCODERS, help=ENCODER_HELP)
    _trust_flag(x)
    _checkpoint_flag(x)
    x.set_defaults(fn=cmd_export)

    d = sub.add_parser("embed", help="features of every image in a folder under a run's encoder")
    d.add_argument("--run", required=True)
    d.add_argument("--images", required=True, help="folder of images (searched recursively)")
    d.add_argument("--out", required=True, help="FILE.npy, float32 (N, D); FILE.txt lists the images in order")
    d.add_argument("--feature", choices=["cls", "mean"], help="default: the method's")
    d.add_argument("--ema", action="store_true", help="--encoder ema")
    d.add_argument("--encoder", choices=ENCODERS, help=ENCODER_HELP)
    d.add_argument("--batch-size", type=int, default=256)
    d.add_argument("--device", help="default: cuda when available, else cpu")
    d.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail")
    _trust_flag(d)
    _checkpoint_flag(d)
    d.set_defaults(fn=cmd_embed)

    sm = sub.add_parser("sample", help="generate images with a diffusion-trained run (ddae) into a PNG grid")
    sm.add_argument("--run", required=True)
    sm.add_argument("--n", type=int, default=64, help="images")
    sm.add_argument("--sampler", choices=["ddim", "heun"], help="default: ddim for DDPM runs, heun for EDM runs")
    sm.add_argument("--steps", type=int, default=50)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", help="FILE.png (default: <run>/samples/<sampler>-<steps>steps-seed<seed>.png)")
    sm.add_argument("--device", help="default: cuda when available, else cpu")
    _trust_flag(sm)
    sm.set_defaults(fn=cmd_sample)

    an = sub.add_parser("analyze", help="plots + JSON of what a run learned (attention, alignment, ...)")
    ansub = an.add_subparsers(dest="analysis", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", required=True, help="run directory")
    common.add_argument("--out", help="directory, or FILE(.png) for FILE.png + FILE.json "
                                      "(default: <run>/analysis/<name>.png/.json)")
    common.add_argument("--dataset", help="default: the run's pretraining dataset")
    common.add_argument("--data-root")
    common.add_argument("--split", default="test")
    common.add_argument("--seed", type=int, default=0, help="which images, masks and noise")
    common.add_argument("--device", help="default: cuda when available, else cpu")
    _trust_flag(common)
    ad = ansub.add_parser("attention-distance", parents=[common],
                          help="mean attention distance (px) per head per layer (BYON figure 1)")
    ad.add_argument("--n", type=int, default=256, help="images")
    ad.add_argument("--batch-size", type=int, default=64)
    am = ansub.add_parser("attention-maps", parents=[common],
                          help="last-layer CLS attention per head over images (BYON figures 5, 10)")
    am.add_argument("--n", type=int, default=8, help="images (rows)")
    au = ansub.add_parser("align-uniform", parents=[common],
                          help="label-free alignment / uniformity per layer (DDAE eqs. 3-4, figure 3)")
    au.add_argument("--pairs", choices=["noise", "views"], help="default: noise for diffusion methods, else views")
    noise = au.add_mutually_exclusive_group()
    noise.add_argument("--t", type=int, help="DDPM timestep of --pairs noise (default 100)")
    noise.add_argument("--sigma", type=float, help="instead of --t: x + sigma * eps")
    au.add_argument("--n", type=int, default=512, help="images")
    au.add_argument("--batch-size", type=int, default=128)
    rc = ansub.add_parser("reconstructions", parents=[common],
                          help="input / corrupted / reconstructed grid (reconstruction methods)")
    rc.add_argument("--n", type=int, default=8, help="images (rows)")
    em = ansub.add_parser("embedding-2d", parents=[common], help="2-D map of the test features coloured by class")
    em.add_argument("--method", choices=["pca", "tsne"], default="pca", help="tsne needs scikit-learn")
    em.add_argument("--feature", choices=["cls", "mean"], help="default: the method's")
    em.add_argument("--n", type=int, default=2000, help="points (0: every image of the split)")
    an.set_defaults(fn=cmd_analyze)
    b = sub.add_parser("bench", help="benchmark harness (benchmarks.md protocols)")
    bsub = b.add_subparsers(dest="bench", required=True)
    runs = argparse.ArgumentParser(add_help=False)  # what every pretraining harness shares
    runs.add_argument("--protocol", default="fmnist-cpu")
    runs.add_argument("--runs", default="runs/bench")
    runs.add_argument("--results", default="benchmarks/results")
    runs.add_argument("--data-root")
    runs.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE", help="applied to every run")
    runs.add_argument("--rerun-changed", action="store_true",
                      help="a record (or run) trained otherwise than its recipe now trains it (e.g. a val-tuned "
                           "configs/<method>.yaml moved): move it to superseded/ beside it and train it again "
                           "(default: an error naming the settings that differ)")
    q = bsub.add_parser("quality", parents=[runs], help="pretrain + frozen evaluations, one JSON per run")
    q.add_argument("--methods", required=True, help="comma-separated; also 'random-init' and 'pixels'")
    q.add_argument("--seeds", help="comma-separated (default: the protocol's)")
    q.add_argument("--tag", help="name runs and results <method>-<tag>-seed<s> (a variant kept apart)")
    q.add_argument("--recipes", default="configs",
                   help="folder of method recipes applied under the protocol: DIR/<method>.yaml or "
                        "DIR/<method>/default.yaml (the val-tuned ones in configs/); 'none': built-in recipes")
    q.set_defaults(fn=cmd_bench)
    w = bsub.add_parser("sweep", parents=[runs], help="run a set of config files (an ablation) and tabulate them")
    w.add_argument("--configs", nargs="+", required=True, help="e.g. configs/byon/ablation/*.yaml")
    w.add_argument("--seeds", default="0")
    w.add_argument("--table", help="also write the Markdown table to this file")
    w.set_defaults(fn=cmd_sweep)
    tu = bsub.add_parser("tune", parents=[runs],
                         help="a hyper-parameter grid scored on the held-out val split (never on test)",
                         description="Pretrain each grid cell on the training split minus the protocol's val "
                                     "hold-out, score kNN + linear on the held-out images, confirm the best cells at "
                                     "full length, name the winner by val linear top-1 (val kNN breaks ties).")
    tu.add_argument("--methods", required=True, help="comma-separated")
    tu.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                    help="one axis (repeatable); list values stay whole: data.crop_scale=[1,1],[0.6,1]")
    tu.add_argument("--grid-file", action="append", default=[], metavar="FILE.yaml",
                    help="axes from YAML (axes: {key: [values]} or {name: {label: {key: value}}}; configs/tune/)")
    tu.add_argument("--epochs", type=int, help="screen length (default: the protocol's, then no confirmation)")
    tu.add_argument("--confirm", type=int, default=2, help="best screen cells re-run at the protocol's epochs")
    tu.add_argument("--stage", choices=["screen", "confirm", "all", "table"], default="all",
                    help="table: write the tables of the finished cells and run nothing")
    tu.add_argument("--shard", default="0/1", metavar="I/N", help="run cells I, I+N, ... (parallel processes)")
    tu.add_argument("--seed", type=int, default=0)
    tu.add_argument("--name", help="table/winner file stem instead of the method ({method} is replaced): one step "
                                   "of a coordinate search, e.g. --name {method}-aug")
    tu.add_argument("--config", help="YAML config applied under the protocol (e.g. configs/mae/paper.yaml)")
    tu.add_argument("--max-gflops", type=float, metavar="G",
                    help="compute budget (training GFLOPs per image): costlier cells are screened and shown as a "
                         "reference but never confirmed or chosen")
    tu.set_defaults(fn=cmd_tune)
    v = bsub.add_parser("speed", help="training images/s, FLOP utilisation, eval timings; one JSON per method")
    v.add_argument("--methods", required=True, help="comma-separated, e.g. mae,byon")
    v.add_argument("--protocol", default="fmnist-cpu", help="data, encoder and batch of this quality protocol")
    v.add_argument("--steps", type=int, default=50, help="timed training steps (after the warm-up)")
    v.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    v.add_argument("--accelerator", default="auto", help="auto (CUDA when there is one) | cpu")
    v.add_argument("--profile-steps", type=int, default=0,
                   help="profile this many steps after the timed ones (torch.profiler): time shares of GEMM, "
                        "attention and the rest, FLOP rate inside the kernels, top ops")
    v.add_argument("--allow-busy", action="store_true",
                   help="write the record even when other processes used over 10 %% of the CPU while it was timed "
                        "(it is marked quiet: false); by default such a measurement is refused")
    v.add_argument("--no-eval", dest="eval", action="store_false",
                   help="time training only (skip feature extraction, kNN and linear-probe timings)")
    v.add_argument("--runs", default="runs/bench-speed")
    v.add_argument("--results", default="benchmarks/results")
    v.add_argument("--data-root")
    v.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE", help="e.g. train.num_threads=2 train.compile=true")
    v.add_argument("--config", help="one method's YAML config under the protocol (e.g. configs/byon/default.yaml): "
                                    "recorded as <method>-<stem> beside the built-in recipe's record (<method>-tuned "
                                    "for configs/<method>.yaml)")
    v.set_defaults(fn=cmd_speed)
    bd = bsub.add_parser("data", help="streaming decode + crop images/s per worker and in total, peak RSS, and the "
                                      "workers one GPU would need")
    bd.add_argument("--images", help="an image folder (default: generate --generate JPEGs in a temporary folder)")
    bd.add_argument("--generate", type=int, default=2000, help="JPEGs to generate (default 2000)")
    bd.add_argument("--sizes", type=int, nargs=2, default=[300, 500], metavar=("MIN", "MAX"),
                    help="side range of the generated JPEGs in px (default 300 500)")
    bd.add_argument("--image-size", type=int, default=224, help="crop size (default 224)")
    bd.add_argument("--workers", default="0,1,2", help="worker counts to time, comma-separated (default 0,1,2)")
    bd.add_argument("--batch", type=int, default=64)
    bd.add_argument("--no-shards", dest="shards", action="store_false", help="time the folder only")
    bd.add_argument("--no-flops", dest="flops", action="store_false", help="skip the ViT-B FLOP count and estimate")
    bd.add_argument("--out", default="benchmarks/data-decode.json", help="the JSON record (and .md beside it)")
    bd.set_defaults(fn=cmd_bench_data)

    r = bsub.add_parser("report", help="render benchmarks/RESULTS.md and plots from the result JSONs")
    r.add_argument("--results", default="benchmarks/results")
    r.add_argument("--out", default="benchmarks/RESULTS.md")
    r.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # only a command read from the process's own command line may start more processes: Lightning starts them
    # by re-running that command line (a test or script calling main([...]) would be re-run whole)
    args.own_command_line = argv is None
    try:
        if getattr(args, "trust_checkpoint", False):
            from byon.rundir import trust_checkpoints

            trust_checkpoints()
        return args.fn(args)
    except Interrupted as err:
        print(f"byon: error: {err}", file=sys.stderr)
        return err.exit_code
    except ByonError as err:
        print(f"byon: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # outside training (a run stops at a step boundary through `Interrupted`): nothing new was saved
        print("byon: interrupted before anything was saved; checkpoints from earlier are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
