"""Token saliency and Image-specific Adaptive Noise (IAN) — BYON section 3.4, eqs. 4–8.

Reading fixed by spec/byon.md items 4–5: saliency is the attention each token *receives* under a
row-softmaxed token affinity (so its mean over tokens is exactly 1); IAN turns the fraction of tokens
whose perturbed saliency beats δ into a per-image timestep, and the mean perturbed saliency into a
per-image noise scale η.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byon.draws import Draw, rand, randn
from byon.errors import unknown

SALIENCY_SCALES = ("sqrt", "none")
# eq. 8's image statistic. mean: the paper's Δη·mean_j S̃_j — but mean_j S_j = 1 exactly (row-softmax column sums),
# so η then carries no image information (only the perturbation and noise vary). spread: Δη·(mean_j S̃_j +
# std_j S̃_j), which adds how unevenly attention falls on the image's tokens (our variant, a switch).
IAN_ETAS = ("mean", "spread")


def token_saliency(X: Tensor, scale: str = "sqrt") -> Tensor:
    """X: (B, N, D) token embeddings → S: (B, N), S_j = Σ_i softmax_j(A)_ij with A = X·Xᵀ / sqrt(D).

    scale "none" drops the 1/sqrt(D) (the paper's literal A = X·Xᵀ, which saturates to the diagonal for
    wide embeddings). Computed in float32 outside autocast so mean_j S_j = 1 holds to rounding.
    Pure function: pass a detached X if no gradient is wanted.
    """
    if scale not in SALIENCY_SCALES:
        raise unknown("saliency scale", scale, SALIENCY_SCALES)
    with torch.autocast(device_type=X.device.type, enabled=False):
        X = X.float()
        A = X @ X.transpose(1, 2)  # (B, N, N)
        if scale == "sqrt":
            A = A / X.shape[-1] ** 0.5
        return A.softmax(dim=-1).sum(dim=1)  # column sums of the row-stochastic matrix


@dataclass
class IANOutput:
    """t: (B,) long timesteps; tau: (B,) normalised timesteps in [T_min, T_max]; eta: (B,) noise scales;
    y: (B,) fraction of salient tokens; s_tilde: (B, N) perturbed saliency."""

    t: Tensor
    tau: Tensor
    eta: Tensor
    y: Tensor
    s_tilde: Tensor


def ian(S: Tensor, generator: Draw, lambda_ian: float = 0.1, delta: float = 1.25,
        t_min: float = 0.0, t_max: float = 1.0, num_timesteps: int = 1000, delta_eta: float = 0.8,
        perturb: float = 0.5, eta_stat: str = "mean") -> IANOutput:
    """Per-image timestep and noise scale from token saliency S: (B, N).

    S̃_j = S_j + U(0, perturb)                      (section 3.4.1)
    y   = mean_j 1(S̃_j > δ)                         (eq. 6)
    τ   = clip(λ_ian·y + d, T_min, T_max), d ~ U(0, 1) (eq. 7, normalised); t = round(τ·(T − 1))
    η   = Δη·mean_j S̃_j + mean_j n_j, n_j ~ N(0, 1)   (eq. 8; eta_stat "spread": Δη·(mean_j S̃_j + std_j S̃_j) + …)
    """
    if eta_stat not in IAN_ETAS:
        raise unknown("IAN eta statistic", eta_stat, IAN_ETAS)
    B, N = S.shape
    dev = S.device
    s_tilde = S.float() + rand(generator, B, N, device=dev) * perturb
    y = (s_tilde > delta).float().mean(dim=1)
    d = rand(generator, B, device=dev)
    tau = (lambda_ian * y + d).clamp(t_min, t_max)
    t = torch.round(tau * (num_timesteps - 1)).long()
    n = randn(generator, B, N, device=dev)
    stat = s_tilde.mean(dim=1)
    if eta_stat == "spread":
        stat = stat + s_tilde.std(dim=1, unbiased=False)
    eta = delta_eta * stat + n.mean(dim=1)
    return IANOutput(t=t, tau=tau, eta=eta, y=y, s_tilde=s_tilde)


__all__ = ["IAN_ETAS", "SALIENCY_SCALES", "IANOutput", "ian", "token_saliency"]
