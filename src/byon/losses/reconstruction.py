"""Token-masked reconstruction MSE — BYON eq. 13 (de-masking, masked tokens) and eq. 16 (de-noising,
visible tokens); also MAE's loss. Per-token MSE over the token's values, then averaged over the
selected tokens of the whole batch. The L1 twin is SimMIM's loss (sum of |error| over masked values /
number of masked values, which is the same mean when every token has P values).
"""

from __future__ import annotations

from torch import Tensor

from byon.corruption.masking import masked_mean


def token_mse(pred: Tensor, target: Tensor) -> Tensor:
    """pred, target: (B, N, P) → (B, N) mean squared error per token."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def masked_mse(pred: Tensor, target: Tensor, tokens: Tensor) -> Tensor:
    """Σ_i tokens_i·‖pred_i − target_i‖²/P / Σ_i tokens_i over the batch; tokens: (B, N) bool. 0 if none."""
    return masked_mean(token_mse(pred, target), tokens)


def token_l1(pred: Tensor, target: Tensor) -> Tensor:
    """pred, target: (B, N, P) → (B, N) mean absolute error per token."""
    return (pred.float() - target.float()).abs().mean(dim=-1)


def masked_l1(pred: Tensor, target: Tensor, tokens: Tensor) -> Tensor:
    """Σ_i tokens_i·‖pred_i − target_i‖₁/P / Σ_i tokens_i over the batch; tokens: (B, N) bool. 0 if none."""
    return masked_mean(token_l1(pred, target), tokens)
