"""`byon bench quality`: pretrain + frozen evaluations per protocol, one JSON per run (benchmarks.md)."""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byon.config import DataConfig, parse_set
from byon.data import load_dataset
from byon.engine.processes import plan_processes
from byon.engine.run import train
from byon.errors import ByonError, unknown
from byon.eval.baselines import pca_features, pixel_features, pixel_mean
from byon.eval.finetune import FinetuneConfig, finetune
from byon.eval.frozen import FEATURE_TYPES, evaluate, evaluate_lowshot
from byon.eval.knn import knn_classify
from byon.eval.linear import linear_probe
from byon.methods import METHODS, load_config
from byon.provenance import git_commit, git_dirty, hardware
from byon.rundir import torch_threads, write_json


@dataclass(frozen=True)
class Protocol:
    """Pretraining (dataset, encoder preset, epochs, batch) and the frozen evaluations of a benchmark.

    The result metrics `lowshot{n}_{feature}` are the mean over `lowshot_draws` draws of n images per class,
    `lowshot{n}_{feature}_std` the std over those draws (not over seeds)."""

    dataset: str
    model: str
    epochs: int
    batch_size: int
    seeds: tuple[int, ...] = (0, 1, 2)
    lowshot: tuple[int, ...] = (10, 100)
    lowshot_draws: int = 3
    # 10-shot is only 100 images, a few SGD steps per epoch: 30 epochs (the full-data probe's) would under-train
    # it. The committed fmnist-cpu results were measured with 100.
    lowshot_epochs: int = 100
    linear_epochs: int = 30
    knn_k: int = 20
    knn_temperature: float = 0.07
    # Training images held out as the val split that `byon bench tune` pretrains without and scores on (a
    # stratified, seeded cut of the training split, the same for every seed and method).
    val_size: int = 10000
    # End-to-end fine-tuning (`byon eval finetune`, the paper's headline metric), one fixed recipe for every
    # method: these epochs (0 = none) on a stratified subset of this many labelled training images (None: all),
    # base lr, layer decay and mixup / cutmix; the rest are FinetuneConfig's defaults (smoothing, drop-path).
    finetune_epochs: int = 0
    finetune_subset: int | None = None
    finetune_blr: float = 5e-4
    finetune_layer_decay: float = 0.75
    finetune_mixup: float = 0.8
    finetune_cutmix: float = 1.0

    def finetune_config(self, seed: int) -> FinetuneConfig:
        """The protocol's fine-tuning recipe."""
        return FinetuneConfig(epochs=self.finetune_epochs, subset=self.finetune_subset, blr=self.finetune_blr,
                              layer_decay=self.finetune_layer_decay, mixup=self.finetune_mixup,
                              cutmix=self.finetune_cutmix, seed=seed)

    def overrides(self, root: str | None = None, **train: Any) -> dict[str, Any]:
        """The run config overrides of its pretraining (`train`: more train-section keys)."""
        return {"data": {"dataset": self.dataset, "root": root}, "model": {"preset": self.model},
                "train": {"epochs": self.epochs, "batch_size": self.batch_size} | train}


PROTOCOLS = {
    # fine-tuning on 10,000 labelled images: the whole training split would take ~80 min a run on one CPU thread
    # its fine-tuning recipe chosen on val (results/tune/fmnist-cpu/finetune-mae.md): blr 4e-3, no mixup/cutmix
    "fmnist-cpu": Protocol("fashion-mnist", "vit-micro", epochs=8, batch_size=256, finetune_epochs=8,
                           finetune_subset=10000, finetune_blr=4e-3, finetune_mixup=0.0, finetune_cutmix=0.0),
    "fmnist-gpu": Protocol("fashion-mnist", "vit-tiny", epochs=100, batch_size=512),
    # seconds-long: exercises the harness end to end (tests, smoke checks)
    "smoke": Protocol("synthetic", "vit-test", epochs=1, batch_size=64, seeds=(0,), lowshot=(5,), lowshot_draws=2,
                      linear_epochs=3, val_size=400, finetune_epochs=1, finetune_subset=128),
}

REFERENCES = ("random-init", "pixels")

# `--set` keys that change how a run executes, not what it computes: they neither name the run nor make a run
# directory's config differ (the committed fmnist-cpu runs were made with --set train.num_threads=1).
# (train.devices is not among them: it multiplies the global batch and with it the lr.)
NON_RESULT_KEYS = frozenset({"train.num_threads", "train.progress", "train.log_every_n_steps",
                             "train.ckpt_every_steps", "train.accelerator"})


def _env() -> dict[str, Any]:
    """Where and with what this process runs: commit (+ whether src/ has uncommitted changes), hardware, torch."""
    return {"commit": git_commit(), "dirty": git_dirty(), "hardware": hardware(), "torch": str(torch.__version__),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'seed': 0}} → {'train.seed': 0}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_name(base: str, extra: list[str] | None) -> str:
    """`base`, plus a short hash of the `--set` overrides that change the result (`NON_RESULT_KEYS` aside), so a
    run with other overrides gets another run directory and result file."""
    changed = {k: v for k, v in _flat(parse_set(extra or [])).items() if k not in NON_RESULT_KEYS}
    if not changed:
        return base
    return f"{base}-{hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]}"


def _differing(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The keys, sorted, in which two flattened configs differ, `NON_RESULT_KEYS` aside: whether two runs are the
    same experiment."""
    return sorted(k for k in have.keys() | want.keys() if k not in NON_RESULT_KEYS and have.get(k) != want.get(k))


def _run_config(run: Path, cfg: Any) -> dict[str, Any]:
    """The config the run directory was trained with (its config.yaml), after checking that it is `cfg` up to
    `NON_RESULT_KEYS`; `cfg`'s own when the directory has none yet."""
    path = run / "config.yaml"
    if not path.is_file():
        return cfg.to_dict()
    fix = "pass --tag or another --runs, or delete it"
    try:
        own = load_config(path)
    except ByonError as e:
        raise ByonError(f"run dir {run} has a config.yaml this version cannot read ({e}); {fix}") from None
    diff = _differing(_resolved(own), _resolved(cfg))
    if diff:
        raise ByonError(f"run dir {run} was trained with another config (differs in {', '.join(diff)}); {fix}")
    return own.to_dict()


def _resolved(cfg: Any) -> dict[str, Any]:
    """`cfg` flattened, with `train.devices: auto` resolved as `train()` resolves it for a library call (one
    process): a run's config.yaml holds the resolved value."""
    plan = plan_processes(cfg.train, per_core=False)
    return _flat(cfg.to_dict()) | {"train.devices": plan.devices, "train.strategy": plan.strategy,
                                   "train.batch_size": plan.batch_size}


def _train_time(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's training wall time and images/s. For a resumed run the summary's images/s covers only the last
    segment, so it comes from the images/s logged over the whole run; a run resumed from a checkpoint older than
    the engine's time keeping has no total time either: it is then steps × global batch / that mean, marked."""
    out = {"wall_time_s": summary.get("wall_time_s"), "images_per_s": summary["images_per_s"]}
    if summary.get("segments", 1) == 1 and out["wall_time_s"] is not None:
        return out

    with (run / "logs" / "metrics.csv").open() as f:
        rates = [float(r["train/images_per_s"]) for r in csv.DictReader(f) if r.get("train/images_per_s")]
    if not rates:
        return out
    out |= {"images_per_s": round(sum(rates) / len(rates), 2), "segments": summary.get("segments")}
    if out["wall_time_s"] is None:
        out |= {"wall_time_s": round(summary["steps"] * summary["global_batch"] / out["images_per_s"], 2),
                "wall_time_estimated": "steps x global batch / mean images/s logged over the run"}
    return out


def _finetune_metrics(run: Path, p: Protocol, seed: int, root: str | None, split: str) -> dict[str, Any]:
    """The protocol's fine-tuning: top-1 on `split`, its wall time, and its settings under "protocol"."""
    cfg = p.finetune_config(seed)
    t0 = time.perf_counter()
    res = finetune(run, p.dataset, root, cfg, split=split)
    return {"finetune": res["top1"], "finetune_seconds": round(time.perf_counter() - t0, 2),
            "finetune_settings": res["settings"]}


def _frozen_metrics(run: Path, p: Protocol, seed: int, root: str | None, split: str = "test",
                    lowshot: bool = True) -> dict[str, Any]:
    """kNN, linear and (unless `lowshot` is False) low-shot top-1 for each feature type, scored on `split`
    ('test', or the run's held-out 'val'); a feature the encoder lacks (no CLS token: I-JEPA, N-JEPA) is None.
    With `lowshot`, also the protocol's fine-tuning (`finetune`, when it has one). "protocol" holds the
    evaluation settings."""
    t0 = time.perf_counter()
    knn = evaluate("knn", run, p.dataset, root=root, seed=seed, k=p.knn_k, temperature=p.knn_temperature,
                   split=split)
    t_knn = time.perf_counter() - t0
    t0 = time.perf_counter()
    lin = evaluate("linear", run, p.dataset, root=root, seed=seed, epochs=p.linear_epochs, split=split)
    t_lin = time.perf_counter() - t0
    metrics: dict[str, Any] = {"split": split}
    for ft in FEATURE_TYPES:
        metrics[f"knn_{ft}"] = knn.get(f"top1_{ft}")
        metrics[f"linear_{ft}"] = lin.get(f"top1_{ft}")
    metrics["knn"], metrics["linear"], metrics["default_feature"] = knn["top1"], lin["top1"], knn["default_feature"]
    metrics["knn_seconds"], metrics["linear_seconds"] = round(t_knn, 2), round(t_lin, 2)
    metrics["protocol"] = {"features": knn["features"], "knn_k": p.knn_k, "knn_temperature": p.knn_temperature,
                           "linear_epochs": p.linear_epochs}
    if not lowshot:
        return metrics
    low = evaluate_lowshot(run, p.dataset, shots=p.lowshot, draws=p.lowshot_draws, root=root, seed=seed,
                           epochs=p.lowshot_epochs, split=split)
    for n in p.lowshot:
        for ft in FEATURE_TYPES:
            metrics[f"lowshot{n}_{ft}"] = low[f"{n}"][ft]["mean"] if ft in low[f"{n}"] else None
            metrics[f"lowshot{n}_{ft}_std"] = low[f"{n}"][ft]["std"] if ft in low[f"{n}"] else None
        metrics[f"lowshot{n}"] = low[f"{n}"][knn["default_feature"]]["mean"]
    metrics["protocol"] |= {"lowshot": list(p.lowshot), "lowshot_draws": p.lowshot_draws,
                            "lowshot_epochs": p.lowshot_epochs}
    if p.finetune_epochs:
        ft = _finetune_metrics(run, p, seed, root, split)
        metrics["protocol"]["finetune"] = ft.pop("finetune_settings")
        metrics |= ft
    return metrics


def run_method(method: str | None, seed: int, protocol: str, runs: Path, results: Path, root: str | None = None,
               extra: list[str] | None = None, epochs: int | None = None, tag: str | None = None,
               config: Path | None = None, sweep: bool = False, rerun_changed: bool = False) -> Path:
    """Pretrain (unless the run finished already) + evaluate on test; write results/<protocol>/<name>-seed<s>.json.

    name: `tag` or the method, plus a hash of the result-changing `extra` overrides (`run_name`). A run directory
    that exists already must hold a run of the same config (`NON_RESULT_KEYS` aside), else a ByonError.
    The record's commit / hardware / torch are the training run's (its summary.json); the evaluation's are under
    "eval_env". `config`: a YAML file (e.g. an ablation row) applied under the protocol's settings; `sweep`: the
    record is a row of a `bench sweep` table (marked "sweep": RESULTS.md leaves it to its own table);
    `rerun_changed`: see `pretrain_and_evaluate`."""
    if tag is None and method is None:
        raise ByonError("bench: give a method or a tag to name the run")
    name = run_name(tag or method, extra)
    return pretrain_and_evaluate(method, seed, protocol, runs / protocol / f"{name}-seed{seed}",
                                 results / protocol / f"{name}-seed{seed}.json", name, root, extra, epochs, config,
                                 sweep=sweep, rerun_changed=rerun_changed)


def record_config(method: str | None, seed: int, protocol: str, root: str | None = None,
                  extra: list[str] | None = None, epochs: int | None = None, config: Path | None = None) -> Any:
    """The training config of a protocol record (`pretrain_and_evaluate`'s arguments), without running it."""
    overrides = PROTOCOLS[protocol].overrides(root, seed=seed, progress=False,
                                              **({} if epochs is None else {"epochs": epochs}))
    if method is not None:
        overrides["method"] = method
    return load_config(config, overrides, sets=extra or [])


def pretrain_and_evaluate(method: str | None, seed: int, protocol: str, run: Path, out_json: Path, name: str,
                          root: str | None = None, extra: list[str] | None = None, epochs: int | None = None,
                          config: Path | None = None, split: str = "test", lowshot: bool = True,
                          sweep: bool = False, rerun_changed: bool = False) -> Path:
    """One protocol record: pretrain `method` (or `config`'s) into `run` under the protocol's data, encoder,
    epochs (or `epochs`), batch and `seed`, then `extra` (`--set` strings); evaluate kNN, linear and (with
    `lowshot`) low-shot on `split`; write the record to `out_json`. Finished parts are reused: an existing
    `out_json` of the same experiment is returned as it is, a finished run is only evaluated, an interrupted one
    resumed. A record or run trained otherwise than `config` and `extra` would train it now (a recipe that moved
    since) is an error, or with `rerun_changed` moved to superseded/ beside it (`supersede`) and trained again."""
    p = PROTOCOLS[protocol]
    cfg = record_config(method, seed, protocol, root, extra, epochs, config)
    if out_json.is_file():
        rec = json.loads(out_json.read_text())
        changes = config_changes(rec, cfg) if isinstance(rec.get("config"), dict) else []
        if not changes:
            return out_json
        if not rerun_changed:
            raise ByonError(f"{out_json} was trained with other settings than it would be now "
                            f"({'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}): pass --rerun-changed to "
                            f"move it and its run to superseded/ and train it again")
        supersede(out_json, run)
    method = cfg.method
    try:
        run_cfg = _run_config(run, cfg)
    except ByonError:  # a run directory of another config (or one this version cannot read), left without a record
        if not rerun_changed:
            raise
        supersede(None, run)
        run_cfg = _run_config(run, cfg)
    done = run / "summary.json"
    mark = {"sweep": True} if sweep else {}
    twin = None if done.is_file() else twin_record(out_json.parent, seed, cfg, split, lowshot)
    if twin is not None:  # the same experiment under another name (e.g. Table 1's full row = the default)
        record = json.loads(twin.read_text()) | {"name": name, "overrides": list(extra or []),
                                                "recipe": None if config is None else str(config),
                                                "same_run_as": twin.name, "command": shlex.join(sys.argv)}
        record["metrics"] = read_as(record["metrics"], METHODS[method].feature_of(cfg.method_cfg))
        write_json(out_json, record | mark)
        return out_json
    if not done.is_file() or "interrupted" in json.loads(done.read_text()):  # a signal stopped it: continue it
        train(cfg, run, resume="auto")  # a fresh start in a new directory, else the run continues
        run_cfg = _run_config(run, cfg)
    summary = json.loads((run / "summary.json").read_text())
    record = {"name": name, "method": method, "protocol": protocol, "seed": seed, "overrides": list(extra or []),
              "recipe": None if config is None else str(config), "config": run_cfg, "run_dir": str(run),
              **_train_time(run, summary),
              "flops_per_image": summary["flops_per_image"], "steps": summary["steps"],
              # the training's environment; a summary from before `dirty` was recorded leaves it None (unknown)
              **{k: summary.get(k) for k in ("commit", "dirty", "hardware", "torch", "resolved")},
              "command": shlex.join(sys.argv)} | mark
    # the command's thread count also for the evaluation: a finished run is evaluated by a fresh process that
    # would take every core, beside the other 1-thread jobs of a queue (scripts/bench/v2-queue.sh)
    with torch_threads(cfg.train.num_threads):
        record |= {"metrics": _frozen_metrics(run, p, seed, root, split, lowshot), "eval_env": _env()}
    write_json(out_json, record)
    return out_json


def read_as(metrics: dict[str, Any], feature: str) -> dict[str, Any]:
    """A record's metrics with its headline scores (kNN, linear, low-shot) read from `feature`, the method's
    default read-out now: a record scored when the default was the other feature keeps both features' scores,
    so its copy scores what a fresh run would. Fine-tuning pools one feature and cannot be re-read."""
    if metrics.get("default_feature", feature) == feature or metrics.get(f"knn_{feature}") is None:
        return metrics
    if "finetune" in metrics:
        raise ByonError(f"a fine-tuned record read out by {metrics['default_feature']} cannot be re-read by {feature}")
    out = dict(metrics, default_feature=feature, knn=metrics[f"knn_{feature}"], linear=metrics[f"linear_{feature}"])
    for k in [k for k in metrics if k.startswith("lowshot") and k[len("lowshot"):].isdigit()]:
        out[k] = metrics[f"{k}_{feature}"]
    return out


def config_changes(rec: dict[str, Any], cfg: Any) -> list[str]:
    """How record `rec` was trained otherwise than `cfg` would train it: 'key: theirs -> cfg's' for each
    result-changing setting (`NON_RESULT_KEYS` aside), sorted; [] when it is the same experiment. A key the record
    lacks (a setting added since) counts at its default: new settings default to the behaviour before them."""
    want = json.loads(json.dumps(_resolved(cfg)))  # tuples as the records' JSON lists
    have = json.loads(json.dumps(_flat(load_config(None, {"method": cfg.method}).to_dict()))) | _flat(rec["config"])
    return [f"{k}: {have.get(k)} -> {want.get(k)}" for k in _differing(have, want)]


def recipe_changes(rec: dict[str, Any]) -> list[str]:
    """How a protocol record was trained otherwise than its recipe file (`rec['recipe']`) trains it now
    (`config_changes`): a record left from before a val-tuned recipe moved. [] when it names no recipe file."""
    recipe = rec.get("recipe")
    if not recipe or not Path(recipe).is_file() or not isinstance(rec.get("config"), dict):
        return []
    cfg = record_config(rec.get("method"), rec["seed"], rec["protocol"], extra=rec.get("overrides"),
                        config=Path(recipe))
    return config_changes(rec, cfg)


def carries(winner: dict[str, Any], recipes: Path) -> bool:
    """Whether the method's recipe file under `recipes` (`recipe_file`) trains what a `bench tune` winner ran (its
    `sets`), the val hold-out and `NON_RESULT_KEYS` aside: the step of a coordinate search whose choice the recipe
    holds now."""
    recipe = recipe_file(recipes, winner["method"])
    if recipe is None or winner.get("protocol") not in PROTOCOLS:
        return False
    sets = [s for s in winner["sets"] if not s.startswith("data.val_size=")]
    args = (winner["method"], 0, winner["protocol"])
    ran = _resolved(record_config(*args, extra=sets, epochs=winner.get("epochs")))
    now = _resolved(record_config(*args, epochs=winner.get("epochs"), config=recipe))
    return not _differing(ran, now)


def row_mark(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, str]:
    """A report row's records to show, its mark and the mark's note, from each record's `recipe_changes` (once):
    ('', '') when every record is what its recipe file trains now; '‡' and which file and settings moved when none
    is (a row left from before a val-tuned recipe changed is shown marked, never as the recipe's result); '§' and
    which seeds were left out when only some are (a re-run under way), so a row never averages two recipes."""
    moved = [(r, changes) for r in records if (changes := recipe_changes(r))]
    if not moved:
        return records, "", ""
    if len(moved) == len(records):
        r, changes = moved[0]
        return records, "‡", f"`{r['recipe']}` now differs in " + ", ".join(changes)
    seeds = ", ".join(str(r.get("seed", "?")) for r, _ in moved)
    left = [r for r in records if all(r is not m for m, _ in moved)]
    return left, "§", f"{'seeds' if len(moved) > 1 else 'seed'} {seeds} ({', '.join(moved[0][1])})"


LEFT_OUT = ("§ seeds left out of the row until their re-run finishes: trained with an earlier recipe than its recipe "
            "file holds now (`byon bench quality|sweep … --rerun-changed` re-runs them) — ")


def supersede(out_json: Path | None, run: Path) -> None:
    """Move a record trained with an earlier recipe (`out_json`, when there is one) and its run directory to
    superseded/<time>/ beside each: kept, checkpoints and all, where no report or twin lookup reads them."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for src in (out_json, run):
        if src is not None and src.exists():
            dst, n = src.parent / "superseded" / stamp / src.name, 1
            while dst.exists():  # moved aside before within the same second
                dst, n = src.parent / "superseded" / f"{stamp}-{n}" / src.name, n + 1
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
            moved.append(str(dst))
    print(f"trained with an earlier recipe, moved: {', '.join(moved)}")


def twin_record(folder: Path, seed: int, cfg: Any, split: str = "test", lowshot: bool = True) -> Path | None:
    """A record in `folder` of the same experiment: seed `seed`, trained with `cfg` up to `NON_RESULT_KEYS` and
    scored the same way (split, with or without low-shot and fine-tuning). Rows of different tables that are one
    config (Table 1's full row, Table 4's λ 0.1 and Table 6's 60 % with IAN are BYON's default) are then trained
    and evaluated once. Records that are themselves copies (`same_run_as`) are not matched. A key an older record
    lacks counts at its default (`config_changes`)."""
    feature = METHODS[cfg.method].feature_of(cfg.method_cfg)
    for f in sorted(folder.glob(f"*-seed{seed}.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        m = rec.get("metrics") or {}
        if rec.get("same_run_as") or not isinstance(rec.get("config"), dict) or m.get("split", "test") != split:
            continue
        if any(k.startswith("lowshot") for k in m) != lowshot:
            continue
        if "finetune" in m and m.get("default_feature", feature) != feature:
            continue  # fine-tuned through another feature: a copy could not score what a fresh run would
        if not config_changes(rec, cfg):
            return f
    return None


def run_pixels(protocol: str, results: Path, root: str | None = None, split: str = "test") -> Path:
    """Reference rows without a model: raw / centred pixels kNN and linear, PCA-100 kNN. `split` 'val': the
    protocol's held-out val images scored against the rest of the training split, as the tuning cells are
    (results/tune/<protocol>/pixels-val.json)."""
    p = PROTOCOLS[protocol]
    out_json = (results / protocol / "pixels.json" if split == "test"
                else results / "tune" / protocol / "pixels-val.json")
    if out_json.is_file():
        return out_json
    # the tuning cells' hold-out: data.val_size = the protocol's, data.val_seed at its default
    cut = {} if split == "test" else {"val_size": p.val_size, "val_seed": DataConfig.val_seed}
    tr, te = load_dataset(p.dataset, "train", root=root, **cut), load_dataset(p.dataset, split, root=root, **cut)
    mu = pixel_mean(tr.images)
    ftr, fte = pixel_features(tr.images, mu), pixel_features(te.images, mu)
    m: dict[str, Any] = {}
    m["knn_raw"] = knn_classify(ftr["raw"], tr.labels, fte["raw"], te.labels)["top1"]
    m["knn_centered"] = knn_classify(ftr["centered"], tr.labels, fte["centered"], te.labels)["top1"]
    ptr, pte = pca_features(ftr["raw"], fte["raw"], 100)
    m["knn_pca100"] = knn_classify(ptr, tr.labels, pte, te.labels)["top1"]
    m["linear_raw"] = linear_probe(ftr["raw"], tr.labels, fte["raw"], te.labels, epochs=p.linear_epochs)["top1"]
    record = {"name": "pixels", "method": "pixels", "protocol": protocol, "split": split,
              "reference_images": len(tr), "query_images": len(te), "metrics": m,
              "command": shlex.join(sys.argv)} | _env()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_json, record)
    return out_json


def recipe_file(recipes: Path | None, method: str) -> Path | None:
    """The method's recipe under `recipes` (the val-tuned configs/<method>.yaml, or configs/<method>/default.yaml),
    or None: the method's built-in (paper) recipe."""
    if recipes is None:
        return None
    for path in (recipes / f"{method}.yaml", recipes / method / "default.yaml"):
        if path.is_file():
            return path
    return None


def bench_quality(protocol: str, methods: list[str], seeds: list[int] | None, runs: Path, results: Path,
                  root: str | None = None, extra: list[str] | None = None, tag: str | None = None,
                  recipes: Path | None = None, rerun_changed: bool = False) -> list[Path]:
    """`tag`: runs and results named <method>-<tag>-seed<s> instead of <method>-seed<s> (a variant of the
    protocol that should not meet the plain runs). `recipes`: a folder of method configs applied under the
    protocol (`recipe_file`; protocol v2 uses configs/, the val-tuned recipes); None: the built-in recipes.
    `rerun_changed`: re-run a record whose recipe moved since (`pretrain_and_evaluate`)."""
    if protocol not in PROTOCOLS:
        raise unknown("protocol", protocol, PROTOCOLS)
    seeds = list(PROTOCOLS[protocol].seeds) if seeds is None else seeds
    done = []
    for m in methods:
        if m == "pixels":
            done.append(run_pixels(protocol, results, root))
        elif m == "random-init":  # the shared encoder, untrained (MAE's init), same evaluation
            name = "random-init" if tag is None else f"random-init-{tag}"
            done += [run_method("mae", s, protocol, runs, results, root, epochs=0, tag=name) for s in seeds]
        elif m in METHODS:
            name = None if tag is None else f"{m}-{tag}"
            done += [run_method(m, s, protocol, runs, results, root, extra, tag=name,
                                config=recipe_file(recipes, m), rerun_changed=rerun_changed) for s in seeds]
        else:
            raise unknown("method", m, list(METHODS) + list(REFERENCES))
    return done


def bench_sweep(protocol: str, configs: list[Path], seeds: list[int], runs: Path, results: Path,
                root: str | None = None, extra: list[str] | None = None, rerun_changed: bool = False) -> str:
    """Run every config file (one table row each, named by its folder and stem, plus `run_name`'s hash of the
    result-changing `extra` overrides) and return a Markdown table. `rerun_changed`: as in `bench_quality`."""
    if protocol not in PROTOCOLS:
        raise unknown("protocol", protocol, PROTOCOLS)
    rows = []
    for c in configs:
        if not Path(c).is_file():
            raise ByonError(f"sweep: config '{c}' not found")
        tag = f"{Path(c).parent.name}-{Path(c).stem}"
        recs = [json.loads(run_method(None, s, protocol, runs, results, root, extra, tag=tag, config=Path(c),
                                      sweep=True, rerun_changed=rerun_changed).read_text()) for s in seeds]
        rows.append((recs[0]["name"] if recs else tag, recs))
    return sweep_table(rows)


def _mean_std(xs: list[float]) -> str:
    t = torch.tensor(xs, dtype=torch.float64)
    return f"{t.mean():.2f}" if len(xs) == 1 else f"{t.mean():.2f} ± {t.std():.2f}"


def sweep_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> str:
    first = rows[0][1][0]["metrics"] if rows and rows[0][1] else {}
    keys = ["knn", "linear"] + sorted((k for k in first if k.startswith("lowshot") and k[7:].isdigit()),
                                      key=lambda k: int(k[7:]))
    lines = ["| config | seeds | " + " | ".join(keys) + " | images/s |", "|---" * (len(keys) + 3) + "|"]
    for tag, recs in rows:
        vals = [_mean_std([r["metrics"][k] for r in recs]) for k in keys]
        ips = _mean_std([r["images_per_s"] or 0.0 for r in recs])
        lines.append(f"| {tag} | {len(recs)} | " + " | ".join(vals) + f" | {ips} |")
    return "\n".join(lines)


__all__ = ["LEFT_OUT", "NON_RESULT_KEYS", "PROTOCOLS", "bench_quality", "bench_sweep", "carries", "config_changes",
           "recipe_changes", "row_mark", "run_name", "supersede", "sweep_table", "twin_record"]
