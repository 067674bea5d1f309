"""Methods by name. One file per method; this dict is the only registry."""

from __future__ import annotations

from byon.methods.byon import BYON
from byon.methods.mae import MAE

METHODS: dict[str, type] = {
    "mae": MAE,
}
METHODS["byon"] = BYON
