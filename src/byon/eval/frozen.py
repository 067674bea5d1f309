"""Frozen-feature evaluation of a run directory: cached features → kNN / linear probe → JSON."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from byon.config import RunConfig
from byon.data import load_dataset
from byon.errors import ByonError
from byon.eval.features import cached_features, extract_features, last_blocks_cls
from byon.eval.knn import knn_classify
from byon.eval.linear import GRID_BLRS, linear_heads, linear_probe, probe_grid
from byon.export import select_encoder
from byon.methods.base import Method
from byon.rundir import find_checkpoint, load_run, pick_device, write_json

FEATURE_TYPES = ("cls", "mean")


def feature_types(method: Method) -> tuple[str, ...]:
    """The frozen-eval features a method has: ('cls', 'mean'), or ('mean',) when its encoder has no CLS token
    (I-JEPA, N-JEPA: `ViTEncoder(class_token=False)`), whose 'cls' would be the mean of the patch tokens again."""
    return FEATURE_TYPES if method.encoder.cls_token is not None else ("mean",)


def default_feature(method: Method) -> str:
    """The method's `default_feature` ('cls' unless it says otherwise), 'mean' where it has no CLS token."""
    default = method.default_feature
    return default if default in feature_types(method) else "mean"


def _key(run_dir: Path, dataset: str, split: str, subset: int | None, seed: int, val: tuple[int, int],
         checkpoint: str | None = None) -> str:
    ckpt = find_checkpoint(run_dir, checkpoint)
    st = ckpt.stat()
    held = f":val{val[0]}s{val[1]}" if val[0] and split in ("train", "val") else ""
    return f"{ckpt.name}:{st.st_size}:{st.st_mtime_ns}:{dataset}:{split}:{subset}:{seed}{held}"


EVAL_SPLITS = ("test", "val")


def holdout(cfg: RunConfig, split: str, dataset: str) -> tuple[int, int]:
    """(val_size, val_seed) the labelled training split is cut with when evaluating on `split`: the run's own
    hold-out for 'val' (its reference set is the rest of the training split, the images it pretrained on);
    none for 'test' (the whole training split is the reference)."""
    if split not in EVAL_SPLITS:
        raise ByonError(f"unknown evaluation split '{split}'; valid: {', '.join(EVAL_SPLITS)}")
    if split == "test":
        return 0, 0
    if dataset != cfg.data.dataset:
        raise ByonError(f"the val split is held out of the run's own dataset ({cfg.data.dataset}), not of "
                        f"'{dataset}'; evaluate '{dataset}' on its test split")
    if not cfg.data.val_size:
        raise ByonError("this run pretrained on the whole training split, so it has no held-out val split; "
                        "pretrain with --set data.val_size=N to evaluate on val, or evaluate on test")
    return cfg.data.val_size, cfg.data.val_seed


def run_features(run_dir: str | Path, dataset: str, split: str, root: str | None = None,
                 subset: int | None = None, seed: int = 0, batch_size: int = 512,
                 device: str | None = None, blocks: int = 1, run: tuple[RunConfig, torch.nn.Module] | None = None,
                 encoder: str | None = None, readout: dict[str, Any] | None = None, val: tuple[int, int] = (0, 0),
                 checkpoint: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Features {'cls', 'mean'}: (N, D) of a split under the run's encoder, cached in run/features/; only
    {'mean'} for an encoder without a CLS token (`feature_types`). `run` is the run's `load_run` result when
    the caller has it already (the checkpoint is read once per evaluation, not once per split). `encoder`:
    None for the method's eval features, 'online' or 'ema' for that encoder of a method that keeps both
    (`export.select_encoder`); `readout`: the read-out settings the run was loaded with (`load_run`; `run`, when
    given, must have been loaded with them). Both are cached apart. `val`: (val_size, val_seed) of a held-out val
    split (`holdout`): 'train' is then the rest of the training split, 'val' the held-out images. `checkpoint`:
    which of the run's checkpoints (`rundir.find_checkpoint`; `run`, when given, must be loaded from it).

    blocks > 1 adds f'cls{n}' (N, n·D), n = min(blocks, depth): the CLS tokens of the last n blocks
    (`last_blocks_cls`), cached in a file of its own beside the base one (so existing caches stay valid).
    """
    run_dir = Path(run_dir)
    device = pick_device(device)
    cfg, method = run if run is not None else load_run(run_dir, readout=readout, checkpoint=checkpoint)
    chosen = select_encoder(method, encoder=encoder)  # before any data is read: a wrong choice fails first
    info = method.info
    # the run's resize (imagefolder runs with data.image_size) applies to whatever it is evaluated on
    data = load_dataset(dataset, split, root=root, subset=subset if split == "train" else None, seed=seed,
                        image_size=cfg.data.image_size, val_size=val[0], val_seed=val[1])
    if data.in_chans != info.in_chans or data.img_size != info.img_size:
        raise ByonError(f"dataset '{dataset}' has {data.in_chans}x{data.img_size}px images but the run's encoder "
                        f"expects {info.in_chans}x{info.img_size}px; evaluate on data shaped like the training data")
    method = method.to(device)
    key = _key(run_dir, dataset, split, subset, seed, val, checkpoint)
    stem = f"{dataset}-{split}-{subset or 'all'}{f'-val{val[0]}' if val[0] and split == 'train' else ''}"

    def cached(fn, tag: str = "") -> dict[str, torch.Tensor]:
        digest = hashlib.sha1((key + (f":{tag}" if tag else "")).encode()).hexdigest()[:10]
        path = run_dir / "features" / f"{stem}{'-' + tag if tag else ''}-{digest}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return cached_features(path, digest, lambda: extract_features(fn, data.images, info.mean, info.std,
                                                                      batch_size=batch_size, device=device))

    variant = _variant(encoder, readout)
    feats = cached(method.features if encoder is None else chosen.features, variant)
    feats = {k: v for k, v in feats.items() if k in feature_types(method)}
    if blocks > 1:
        n = min(blocks, len(chosen.blocks))
        feats = feats | cached(last_blocks_cls(chosen, n), f"cls{n}" + (f"-{variant}" if variant else ""))
    return feats, data.labels


def _variant(encoder: str | None, readout: dict[str, Any] | None) -> str:
    """'' for the run's own read-out; else e.g. 'online' or 'feature_block=9,feature_t=1' (file-name safe)."""
    parts = [encoder] if encoder else []
    if readout:
        parts.append(",".join(f"{k}={v}" for k, v in sorted(readout.items())))
    return "-".join(parts).replace("/", "_")


def non_default(fn: Callable[..., Any], **values: Any) -> dict[str, Any]:
    """The `values` that differ from the defaults of `fn`'s same-named parameters (the evaluation settings a
    result file must be named after)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in values.items() if k in params and params[k].default != v}


def checkpoint_tag(checkpoint: str | None) -> str | None:
    """A `--checkpoint` choice as it appears in a result's file name: 'epoch-2', 'last', or a path's stem."""
    return checkpoint if checkpoint is None or not checkpoint.endswith(".ckpt") else Path(checkpoint).stem


def result_path(run_dir: Path, kind: str, dataset: str, encoder: str | None,
                 readout: dict[str, Any] | None = None, split: str = "test",
                 settings: dict[str, Any] | None = None) -> Path:
    """<run>/eval/<kind>-<dataset>[-val][-<variant>][-<settings>].json: a chosen encoder's or read-out's results,
    results on the val split, and results under evaluation settings other than the defaults (`settings`, e.g.
    {'k': 100}) do not replace the default's."""
    (run_dir / "eval").mkdir(exist_ok=True)
    parts = ["val" if split == "val" else "", _variant(encoder, readout)]
    if settings:
        parts.append(",".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                              for k, v in sorted(settings.items())).replace("/", "_"))
    return run_dir / "eval" / ("-".join([f"{kind}-{dataset}", *(p for p in parts if p)]) + ".json")


Labelled = tuple[dict[str, torch.Tensor], torch.Tensor]  # features {type: (N, D)}, labels (N,)


def labelled_features(run_dir: Path, dataset: str, root: str | None, subset: int | None, seed: int,
                      encoder: str | None, readout: dict[str, Any] | None, split: str, needs: str, blocks: int = 1,
                      checkpoint: str | None = None) -> tuple[RunConfig, Method, Labelled, Labelled]:
    """What every frozen evaluation starts from: the run (its checkpoint read once) and the labelled features
    (`run_features`) of the reference set (the training split, `subset` of it) and of the scored `split`. A
    dataset without labels is an error saying what `needs` them (e.g. "low-shot evaluation needs"). `checkpoint`:
    which of the run's checkpoints (`load_run`)."""
    cfg, method = run = load_run(run_dir, readout=readout, checkpoint=checkpoint)
    sel = dict(run=run, encoder=encoder, readout=readout, blocks=blocks, val=holdout(cfg, split, dataset),
               checkpoint=checkpoint)
    train_f, train_y = run_features(run_dir, dataset, "train", root, subset, seed, **sel)
    test_f, test_y = run_features(run_dir, dataset, split, root, None, seed, **sel)
    if train_y is None or test_y is None:
        raise ByonError(f"dataset '{dataset}' has no labels; {needs} a labelled dataset")
    return cfg, method, (train_f, train_y), (test_f, test_y)


def evaluate(kind: str, run_dir: str | Path, dataset: str, root: str | None = None, subset: int | None = None,
             seed: int = 0, encoder: str | None = None, readout: dict[str, Any] | None = None,
             split: str = "test", checkpoint: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """kind ∈ {knn, linear}: metrics for every feature type the method has (`feature_types`, listed under
    "features"); `top1` is the method's default feature. `encoder`, `readout`: as in `run_features`. `split`:
    'test' (reference: the whole training split) or 'val' (the run's held-out val split; reference: the rest)."""
    run_dir = Path(run_dir)
    cfg, method, (train_f, train_y), (test_f, test_y) = labelled_features(
        run_dir, dataset, root, subset, seed, encoder, readout, split, "kNN and linear evaluation need",
        checkpoint=checkpoint)
    types, default = feature_types(method), default_feature(method)
    result: dict[str, Any] = {"eval": kind, "run": str(run_dir), "method": cfg.method, "dataset": dataset,
                              "split": split, "subset": subset, "encoder": encoder or "default",
                              "readout": readout or {}, "features": list(types), "default_feature": default}
    for ft in types:
        if kind == "knn":
            r = knn_classify(train_f[ft], train_y, test_f[ft], test_y, **kwargs)
        elif kind == "linear":
            r = linear_probe(train_f[ft], train_y, test_f[ft], test_y, seed=seed, **kwargs)
        else:
            raise ByonError(f"unknown evaluation '{kind}'; valid: knn, linear")
        result[ft] = r
        result[f"top1_{ft}"] = r["top1"]
    result["top1"] = result[f"top1_{default}"]
    settings = non_default(knn_classify if kind == "knn" else linear_probe, **kwargs) | non_default(
        evaluate, subset=subset, seed=seed, checkpoint=checkpoint_tag(checkpoint))
    write_json(result_path(run_dir, kind, dataset, encoder, readout, split, settings), result)
    return result


def lowshot_indices(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """`shots` random indices per class (seeded); error when a class has fewer."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < shots:
            raise ByonError(f"low-shot: class {int(c)} has {len(idx)} labelled images, fewer than {shots}; "
                            f"use fewer shots")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    return torch.cat(picks)


def evaluate_lowshot(run_dir: str | Path, dataset: str, shots: tuple[int, ...] = (10, 100), draws: int = 5,
                     root: str | None = None, seed: int = 0, epochs: int = 100, encoder: str | None = None,
                     readout: dict[str, Any] | None = None, split: str = "test", checkpoint: str | None = None
                     ) -> dict[str, Any]:
    """Linear probe on n labelled images per class, mean ± std over `draws` seeded draws.

    Draw d of a shot count takes `lowshot_indices(train_y, n, seed·1000 + d)` and a probe seeded d, so the
    draws are the same for every run (runs are compared on the same images). Writes and returns
    {str(n): {feature: {"mean", "std", "draws"}}, "top1": {str(n): the default feature's mean}, ...}, one
    entry per feature the method has (`feature_types`); "std" is over the draws. `encoder`, `readout`: as in
    `run_features`; `split`: as in `evaluate`.
    """
    if not shots or any(n < 1 for n in shots):
        raise ByonError(f"low-shot needs positive shot counts (images per class), got {list(shots)}")
    if draws < 1 or epochs < 1:
        raise ByonError(f"low-shot needs draws >= 1 and epochs >= 1, got {draws} and {epochs}")
    run_dir = Path(run_dir)
    cfg, method, (train_f, train_y), (test_f, test_y) = labelled_features(
        run_dir, dataset, root, None, seed, encoder, readout, split, "low-shot evaluation needs",
        checkpoint=checkpoint)
    types, default = feature_types(method), default_feature(method)
    result: dict[str, Any] = {"eval": "lowshot", "run": str(run_dir), "method": cfg.method, "dataset": dataset,
                              "split": split, "shots": list(shots), "draws": draws, "epochs": epochs, "seed": seed,
                              "encoder": encoder or "default", "readout": readout or {}, "features": list(types),
                              "default_feature": default}
    for n in shots:
        result[str(n)] = {}
        for ft in types:
            accs = []
            for d in range(draws):
                idx = lowshot_indices(train_y, n, seed * 1000 + d)
                # few samples: more epochs over the small set, batch no larger than the set
                r = linear_probe(train_f[ft][idx], train_y[idx], test_f[ft], test_y, epochs=epochs,
                                 batch_size=min(256, len(idx)), seed=d)
                accs.append(r["top1"])
            t = torch.tensor(accs)
            result[str(n)][ft] = {"mean": float(t.mean()), "std": float(t.std()) if draws > 1 else 0.0,
                                  "draws": accs}
    result["top1"] = {str(n): result[str(n)][default]["mean"] for n in shots}
    settings = non_default(evaluate_lowshot, shots=shots, draws=draws, seed=seed, epochs=epochs,
                           checkpoint=checkpoint_tag(checkpoint))
    write_json(result_path(run_dir, "lowshot", dataset, encoder, readout, split, settings), result)
    return result


def grid_features(blocks: int, cls: bool = True) -> tuple[str, ...]:
    """The grid's feature types: CLS (when the encoder has one), mean-pool, the last `blocks` blocks' CLS, and
    that plus mean-pool."""
    last = f"cls{blocks}"
    return ("cls", "mean", last, f"{last}+mean")[0 if cls else 1:]


def evaluate_linear_grid(run_dir: str | Path, dataset: str, root: str | None = None, subset: int | None = None,
                         seed: int = 0, blrs: tuple[float, ...] | None = None, blocks: int = 4,
                         encoder: str | None = None, readout: dict[str, Any] | None = None,
                         split: str = "test", checkpoint: str | None = None, choose_on: int | None = None,
                         **kwargs: Any) -> dict[str, Any]:
    """DINOv2-style linear evaluation: heads for every feature type × base lr trained in one pass over the
    cached features (`probe_grid`); writes eval/linear-grid-<dataset>.json. `top1` is the chosen head's on
    `split`. The head is never chosen on test: on split 'test' it is picked on `choose_on` held-out training
    images (default: a sixth of them, 10,000 of Fashion-MNIST's 60,000, as the val split), then its test top-1
    is reported; on 'val' it is picked on val itself (choose_on 0). `encoder`, `readout`: as in `run_features`."""
    if blocks < 2:
        raise ByonError(f"the linear grid concatenates the last blocks' CLS tokens; blocks must be >= 2, "
                        f"got {blocks}")
    run_dir = Path(run_dir)
    cfg, method, (train_f, train_y), (test_f, test_y) = labelled_features(
        run_dir, dataset, root, subset, seed, encoder, readout, split, "linear evaluation needs", blocks,
        checkpoint)
    n = min(blocks, len(select_encoder(method, encoder=encoder).blocks))
    features = grid_features(n, cls="cls" in feature_types(method))
    for f in (train_f, test_f):
        f[features[-1]] = torch.cat([f[features[-2]], f["mean"]], dim=1)
    held = (train_y.shape[0] // 6 if split == "test" else 0) if choose_on is None else choose_on
    grid = probe_grid(train_f, train_y, test_f, test_y, features, blrs or GRID_BLRS, seed=seed, choose_on=held,
                      **kwargs)
    result: dict[str, Any] = {"eval": "linear-grid", "run": str(run_dir), "method": cfg.method, "dataset": dataset,
                              "subset": subset, "seed": seed, "encoder": encoder or "default", "readout": readout or {},
                              "features": list(features), "last_blocks": n,
                              "blrs": list(blrs or GRID_BLRS), "split": split,
                              "top1": grid["best"]["top1"]} | grid
    settings = non_default(evaluate_linear_grid, subset=subset, seed=seed, blrs=blrs, blocks=blocks,
                           checkpoint=checkpoint_tag(checkpoint), choose_on=choose_on) | non_default(
        probe_grid, **kwargs) | non_default(linear_heads, **{k: v for k, v in kwargs.items() if k != "batch_size"})
    write_json(result_path(run_dir, "linear-grid", dataset, encoder, readout, split, settings), result)
    return result
