"""Uncertainty-weighted bootstrap (BYOL-style) loss — BYON eq. 3, spec/byon.md item 10.

L_con = mean_b(−δ_u,b · cos(p_b, z_b)), p = predictor(projector(online CLS)), z = EMA projection of the
reference view (stop-gradient). With δ_u ≡ 1 this is BYOL's loss up to the constant: 2 − 2·cos.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bootstrap_cosine(p: Tensor, z: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """p, z: (B, K); weight: (B,) or None (= 1). Returns (loss scalar, per-sample cosine (B,)).

    z is detached here (the target branch never receives gradients); weight is detached too.
    """
    cos = F.cosine_similarity(p.float(), z.detach().float(), dim=-1)
    w = 1.0 if weight is None else weight.detach().to(cos.dtype)
    return (-w * cos).mean(), cos
