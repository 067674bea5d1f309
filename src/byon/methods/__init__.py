"""Methods by name. One file per method; this dict is the only registry."""

from __future__ import annotations

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

METHODS: dict[str, type] = {
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
