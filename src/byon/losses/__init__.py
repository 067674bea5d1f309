"""Losses, one per file, each citing the equation it implements."""

from byon.losses.bootstrap import bootstrap_cosine
from byon.losses.disruption import disruption_loss
from byon.losses.reconstruction import masked_l1, masked_mse, token_l1, token_mse
from byon.losses.uncertainty import SUE_SIGNS, sue_weight

__all__ = ["SUE_SIGNS", "bootstrap_cosine", "disruption_loss", "masked_l1", "masked_mse", "sue_weight", "token_l1",
           "token_mse"]
