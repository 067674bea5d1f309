"""Typed run configuration: dataclasses, YAML files and `key=value` overrides.

Resolution order (later wins): dataclass defaults → the method's recipe → `--config` YAML →
CLI flags → `--set section.key=value`. Unknown sections/keys and ill-typed values are `ByonError`s.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from byon.errors import ByonError, suggest


def check_range(where: str, value: float | None, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, hint: str = "") -> None:
    """A one-line `ByonError` unless `value` (None: unset, fine) lies in the interval from `lo` to `hi` (each bound
    closed unless `*_open`; None: unbounded)."""
    if value is None:
        return
    low_ok = lo is None or (value > lo if lo_open else value >= lo)
    high_ok = hi is None or (value < hi if hi_open else value <= hi)
    if low_ok and high_ok:
        return
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if hi is None:
        want = f"{'above' if lo_open else 'at least'} {show(lo)}"
    elif lo is None:
        want = f"{'below' if hi_open else 'at most'} {show(hi)}"
    else:
        want = f"in {'(' if lo_open else '['}{show(lo)}, {show(hi)}{')' if hi_open else ']'}"
    raise ByonError(f"{where} must be {want}, got {show(value)}" + (f"; {hint}" if hint else ""))


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    root: str | None = None
    subset: int | None = None  # stratified, seeded subset of the training split (after the val hold-out)
    # Held-out validation split: this many training images (stratified, seeded by val_seed, the same for every
    # run seed) are removed from pretraining and form the 'val' split that tuning scores on. 0 = none.
    val_size: int = 0
    val_seed: int = 0
    image_size: int | None = None  # imagefolder: resize (shorter side + centre crop) to this size
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random-resized-crop area range
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    on_bad_file: str = "fail"  # imagefolder: fail | skip
    # memory: decode the whole split into memory once | stream: decode (and random-resized-crop) each batch in
    # `num_workers` DataLoader worker processes | auto: memory when the decoded split fits memory_budget_gb.
    # Only image folders and shards stream; the other datasets are always held in memory.
    storage: str = "auto"
    memory_budget_gb: float | None = None  # auto's budget for the decoded split; None: a quarter of the RAM
    num_workers: int = 4  # stream: decoding worker processes per training process (0: decode in the main one)

    def validate(self) -> None:
        check_range("data.image_size", self.image_size, 1)
        if self.storage not in ("memory", "stream", "auto"):
            raise ByonError(f"data.storage must be memory, stream or auto, got {self.storage!r}")
        check_range("data.memory_budget_gb", self.memory_budget_gb, 0, lo_open=True,
                    hint="or none for a quarter of the RAM")
        check_range("data.num_workers", self.num_workers, 0, hint="0 decodes in the training process itself")
        lo, hi = self.crop_scale
        check_range("data.crop_scale[0]", lo, 0, 1, lo_open=True, hint="the crop keeps this fraction of the area "
                    "at least, e.g. crop_scale=[0.2,1]")
        check_range("data.crop_scale[1]", hi, lo, 1, hint="the largest crop area fraction: from crop_scale[0] to 1")
        lo, hi = self.crop_ratio
        check_range("data.crop_ratio[0]", lo, 0, lo_open=True, hint="the crop's width/height range, e.g. [0.75,1.33]")
        check_range("data.crop_ratio[1]", hi, lo, hint="the crop's width/height range, e.g. [0.75,1.33]")


@dataclass
class ModelConfig:
    """Encoder shape. `preset` fills the fields left as None."""

    preset: str = "vit-micro"
    img_size: int | None = None  # None: the dataset's image size
    in_chans: int | None = None  # None: the dataset's channel count
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    drop_path: float = 0.0
    pos_embed: str = "sincos"  # sincos (fixed 2-D, MAE) | learned (trained, timm's trunc-normal init)
    grad_checkpointing: bool = False

    def validate(self) -> None:
        for name in ("img_size", "in_chans", "patch_size", "embed_dim", "depth", "num_heads"):
            check_range(f"model.{name}", getattr(self, name), 1)
        check_range("model.mlp_ratio", self.mlp_ratio, 0, lo_open=True)
        check_range("model.drop_path", self.drop_path, 0, 1, hi_open=True)


@dataclass
class OptimConfig:
    """AdamW with no decay on biases/norms/tokens; lr = blr · global_batch / lr_scale_batch."""

    blr: float = 1.5e-4
    lr: float | None = None  # absolute lr; overrides blr scaling when set
    lr_scale_batch: int = 256
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # cosine weight-decay schedule end (I-JEPA)
    warmup_epochs: float = 1.0
    grad_clip: float | None = None

    def validate(self) -> None:
        check_range("optim.blr", self.blr, 0, lo_open=True, hint="e.g. optim.blr=1.5e-4")
        check_range("optim.lr", self.lr, 0, lo_open=True, hint="e.g. optim.lr=1e-3, or drop it to scale optim.blr")
        check_range("optim.lr_scale_batch", self.lr_scale_batch, 1)
        for name in ("min_lr", "weight_decay", "weight_decay_end", "warmup_epochs"):
            check_range(f"optim.{name}", getattr(self, name), 0)
        for i, b in enumerate(self.betas):
            check_range(f"optim.betas[{i}]", b, 0, 1, hi_open=True, hint="e.g. optim.betas=[0.9,0.95]")
        check_range("optim.grad_clip", self.grad_clip, 0, lo_open=True, hint="or none for no clipping")


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 256  # per device; with devices=auto on a multi-core CPU: the global batch, split over them
    seed: int = 0
    max_steps: int | None = None  # stop early (tests, smoke runs)
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int | str = "auto"  # auto: 1, but under `byon pretrain` on a multi-core CPU one process per core
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | ... (Lightning strategy names)
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true on CPU
    ckpt_every_epochs: int = 1
    ckpt_every_steps: int | None = None  # also checkpoint every this many optimizer steps (mid-epoch resume)
    keep_last: int = 3
    max_bad_steps: int = 5  # stop after this many consecutive steps skipped for a non-finite loss/gradient
    log_every_n_steps: int = 10
    progress: bool = True
    num_threads: int | None = None  # torch intra-op threads on CPU
    compile: bool = False  # torch.compile every transformer block (regional compilation; CUDA first of all)
    sync_bn: bool = False  # multi-device: BatchNorm statistics over the global batch (Lightning's sync_batchnorm)
    monitor_every_epochs: int = 0  # online kNN top-1 + collapse statistic every this many epochs; 0 = off
    monitor_subset: int = 2000  # labelled images of each of the train / test splits the monitor uses

    def validate(self) -> None:
        check_range("train.epochs", self.epochs, 0, hint="0 trains nothing (the untrained reference run)")
        check_range("train.batch_size", self.batch_size, 1)
        check_range("train.seed", self.seed, 0, 2**32 - 1)
        check_range("train.max_steps", self.max_steps, 1, hint="or none for no step limit")
        check_range("train.num_nodes", self.num_nodes, 1)
        check_range("train.log_every_n_steps", self.log_every_n_steps, 1)
        check_range("train.num_threads", self.num_threads, 1, hint="or none for torch's default")
        if isinstance(self.devices, int) and (self.devices == 0 or self.devices < -1):
            raise ByonError(f"train.devices must be a device count (at least 1), -1 for all, or a list like '0,1', "
                            f"got {self.devices}")
        for name in ("keep_last", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ByonError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.ckpt_every_epochs < 0:
            raise ByonError(f"train.ckpt_every_epochs must be 0 (off) or more, got {self.ckpt_every_epochs}")
        if self.ckpt_every_steps is not None and self.ckpt_every_steps < 1:
            raise ByonError(f"train.ckpt_every_steps must be at least 1 (or none), got {self.ckpt_every_steps}")
        if self.monitor_every_epochs < 0 or self.monitor_subset < 2:
            raise ByonError(f"train.monitor_every_epochs must be 0 (off) or more and train.monitor_subset at least 2, "
                            f"got {self.monitor_every_epochs} and {self.monitor_subset}")


@dataclass
class RunConfig:
    method: str = "byon"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_cfg: Any = None  # the method's own Config dataclass; YAML section named after the method

    def to_dict(self) -> dict[str, Any]:
        d = {
            "method": self.method,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "optim": dataclasses.asdict(self.optim),
            "train": dataclasses.asdict(self.train),
        }
        if self.method_cfg is not None:
            d[self.method] = dataclasses.asdict(self.method_cfg)
        return _plain(d)


SECTIONS = ("data", "model", "optim", "train")


def _plain(x: Any) -> Any:
    """Tuples → lists, recursively, so the dict dumps as plain YAML."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML or CLI value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ByonError as e:
                errors.append(str(e))
        raise ByonError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ByonError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is list:
        (a,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("[] ").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ByonError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, a, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ByonError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ByonError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ByonError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ByonError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            number = None
        if number is None:
            raise ByonError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ByonError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ByonError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and ill-typed values."""
    data = data or {}
    if not isinstance(data, dict):
        raise ByonError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise ByonError(f"unknown config key '{where}.{k}'{suggest(k, names)}; valid keys of {where}: "
                            f"{', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """['optim.blr=1e-4', 'byon.ian=false'] → nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ByonError(f"--set expects section.key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ByonError(f"--set expects section.key=value (e.g. optim.blr=1e-4), got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ByonError(f"config file '{p}' not found; give the path to a YAML file (see configs/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ByonError(f"config file '{p}' is not valid YAML{at}: {problem}; fix that line (indent with spaces, "
                        f"write key: value)") from None
    if not isinstance(data, dict):
        raise ByonError(f"config file '{p}' must hold a mapping (method:, data:, model:, ...)")
    inherit = data.pop("inherit", None)
    if inherit:
        data = merge(load_yaml(p.parent / inherit), data)
    return data


def resolve(method: str, config_cls: type, recipe: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """A full RunConfig of `method` (its section's dataclass `config_cls`, its `recipe` of default overrides) from a
    nested override dict (YAML + CLI already merged). `byon.methods.build_config` looks the method up."""
    merged = merge(recipe, overrides)
    valid = set(SECTIONS) | {method}
    for k in merged:
        if k not in valid:
            raise ByonError(f"unknown config section '{k}'{suggest(k, valid)}; valid sections: "
                            f"method, {', '.join(SECTIONS)}, {method}")
    return RunConfig(
        method=method,
        data=from_dict(DataConfig, merged.get("data"), "data"),
        model=from_dict(ModelConfig, merged.get("model"), "model"),
        optim=from_dict(OptimConfig, merged.get("optim"), "optim"),
        train=from_dict(TrainConfig, merged.get("train"), "train"),
        method_cfg=from_dict(config_cls, merged.get(method), method),
    )


def merge_all(path: str | Path | None, *dicts: dict[str, Any]) -> dict[str, Any]:
    """The YAML file (optional), then each override dict in order (later wins), merged section by section."""
    merged: dict[str, Any] = load_yaml(path) if path else {}
    for d in dicts:
        merged = merge(merged, d)
    return merged


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
