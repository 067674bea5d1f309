"""l-DAE's loss (Chen et al. 2024, eq. 4): λ_t · Σ_i w_i·r_i², r = V·(x − x̂) the residue in the full PCA basis,
w_i = 1 for the d kept components and a smaller weight (0.1) for the PCA residual."""

from __future__ import annotations

import torch
from torch import Tensor


def component_weights(patch_dim: int, latent_dim: int, residual_weight: float = 0.1) -> Tensor:
    """w (P,): 1 for the first `latent_dim` components, `residual_weight` for the rest."""
    w = torch.full((patch_dim,), float(residual_weight))
    w[:latent_dim] = 1.0
    return w


def pca_weighted_mse(pred: Tensor, target: Tensor, components: Tensor, weights: Tensor,
                     lam: Tensor | None = None) -> Tensor:
    """pred, target: (B, N, P) patches; components: (P, P) orthonormal rows V; weights: (P,) w_i;
    lam: (B,) λ per image or None (= 1). Σ_i w_i r_i² is divided by P (a per-value mean, so with every
    w_i = 1 it is the plain MSE), averaged over patches, weighted by λ, averaged over images."""
    with torch.autocast(pred.device.type, enabled=False):  # fp32 even under bf16 autocast: 0.1-weighted terms
        r = (target.float() - pred.float()) @ components.float().T  # (B, N, P)
        per_image = (r.pow(2) * weights.float()).mean(dim=-1).mean(dim=-1)  # (B,)
        if lam is not None:
            per_image = lam.float() * per_image
        return per_image.mean()


__all__ = ["component_weights", "pca_weighted_mse"]
