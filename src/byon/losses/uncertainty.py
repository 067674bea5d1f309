"""Semantic Uncertainty Estimation (SUE) — BYON eqs. 1–2, as fixed by spec/byon.md item 9.

d_i = mean |Î_i − I_i| over token i's values;  U_i = σ(d_i);  μ_i = 1(U_i < τ_u);  δ_u = mean_i μ_i.
The printed σ(k) = (1 − e^k)/(1 + e^k) = −tanh(k/2) ≤ 0 makes every token "reliable" (δ_u ≡ 1); the
intended map is U_i = tanh(d_i/2) ∈ [0, 1). `sign="literal"` keeps the printed form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from byon.errors import unknown

SUE_SIGNS = ("intended", "literal")


@torch.no_grad()
def sue_weight(recon: Tensor, target: Tensor, tau_u: float = 0.5, sign: str = "intended",
               tokens: Tensor | None = None) -> Tensor:
    """recon, target: (B, N, P) → δ_u: (B,) in [0, 1], detached.

    tokens: optional (B, N) bool — only these tokens have a reconstruction and enter the mean
    (an image with none gets δ_u = 0).
    """
    if sign not in SUE_SIGNS:
        raise unknown("sue sign", sign, SUE_SIGNS)
    d = (recon.float() - target.float()).abs().mean(dim=-1)  # (B, N), eq. 1's L1 distance per token
    # (1 − e^d)/(1 + e^d) written as −tanh(d/2): the same map, without inf/inf = NaN for large d
    u = torch.tanh(d / 2) if sign == "intended" else -torch.tanh(d / 2)
    mu = (u < tau_u).float()  # eq. 2
    if tokens is None:
        return mu.mean(dim=1)
    w = tokens.float()
    return (mu * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
