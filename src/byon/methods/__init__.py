"""Methods by name. One file per method; the `METHODS` dict is the only registry. Here too what needs it: a
run's config resolved for its method (`build_config`, `load_config`) and the method built from one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from byon.config import RunConfig, merge_all, parse_set, resolve
from byon.data import DataInfo
from byon.errors import unknown
from byon.methods.base import Method
from byon.methods.byol import BYOL
from byon.methods.byon import BYON
from byon.methods.ddae import DDAE
from byon.methods.diffmae import DiffMAE
from byon.methods.fnmim import FeatureNoiseMIM
from byon.methods.ijepa import IJEPA
from byon.methods.ldae import LDAE
from byon.methods.mae import MAE
from byon.methods.maskdit import MaskDiT
from byon.methods.njepa import NJEPA
from byon.methods.simmim import SimMIM
from byon.methods.supervised import Supervised
from byon.nn.vit import EncoderShape, resolve_shape

METHODS: dict[str, type[Method]] = {
    "mae": MAE,
}
METHODS["byon"] = BYON
METHODS["simmim"] = SimMIM
METHODS["diffmae"] = DiffMAE
METHODS["maskdit"] = MaskDiT
METHODS["fnmim"] = FeatureNoiseMIM
METHODS["byol"] = BYOL
METHODS["ijepa"] = IJEPA
METHODS["njepa"] = NJEPA
METHODS["ldae"] = LDAE
METHODS["ddae"] = DDAE
METHODS["supervised"] = Supervised  # the labelled reference row, not a pretraining method


def build_config(overrides: dict[str, Any]) -> RunConfig:
    """Resolve a full RunConfig from a nested override dict (YAML + CLI already merged): dataclass defaults → the
    method's recipe → `overrides`."""
    overrides = dict(overrides)
    method = overrides.pop("method", RunConfig.method)
    if method not in METHODS:
        raise unknown("method", str(method), METHODS)
    cls = METHODS[method]
    return resolve(method, cls.Config, cls.recipe, overrides)


def load_config(path: str | Path | None = None, *dicts: dict[str, Any], sets: Sequence[str] = ()) -> RunConfig:
    """The one override path (the CLI and the benchmarks): the YAML file (optional), then each override dict in
    order, then the `--set section.key=value` items; later wins."""
    return build_config(merge_all(path, *dicts, parse_set(list(sets))))


def build_method(cfg: RunConfig, info: DataInfo) -> tuple[torch.nn.Module, EncoderShape]:
    shape = resolve_shape(cfg.model, info.img_size, info.in_chans)
    method = METHODS[cfg.method](cfg.method_cfg, shape, info)
    if cfg.model.grad_checkpointing:
        for m in method.modules():
            if hasattr(m, "set_grad_checkpointing") and m is not method:
                m.set_grad_checkpointing(True)
    return method, shape


def methods_with(hook: str) -> list[str]:
    """The registered methods whose class defines the method hook `hook` (e.g. 'reconstruct'), sorted."""
    return sorted(name for name, cls in METHODS.items() if hasattr(cls, hook))
