"""Losses, one per file, each citing the equation it implements."""

from byon.losses.bootstrap import bootstrap_cosine
from byon.losses.reconstruction import masked_mse, token_mse
from byon.losses.uncertainty import SUE_SIGNS, sue_weight

__all__ = ["SUE_SIGNS", "bootstrap_cosine", "masked_mse", "sue_weight", "token_mse"]
