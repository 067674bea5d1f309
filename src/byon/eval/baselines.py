"""Reference-row features that need no model: raw pixels, centred pixels and their PCA projection."""

from __future__ import annotations

import torch
from torch import Tensor

from byon.errors import ByonError


def pixel_features(images: Tensor, mean: Tensor | None = None) -> dict[str, Tensor]:
    """uint8 (N, C, H, W) → {"raw": (N, C·H·W) in [0, 1]} plus {"centered": raw − mean} when given a mean.

    `mean` is the training split's per-pixel mean (C·H·W,) — `pixel_mean(train_images)` — used for
    every split.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ByonError(f"pixel_features expects uint8 images (N, C, H, W), got {images.dtype} "
                        f"{tuple(images.shape)}")
    raw = images.flatten(1).float().div_(255)
    out = {"raw": raw}
    if mean is not None:
        if mean.shape != (raw.shape[1],):
            raise ByonError(f"pixel mean must have shape ({raw.shape[1]},), got {tuple(mean.shape)}")
        out["centered"] = raw - mean.to(raw)
    return out


def pixel_mean(images: Tensor) -> Tensor:
    """Per-pixel mean of uint8 (N, C, H, W) images in [0, 1] units → (C·H·W,)."""
    return images.flatten(1).double().mean(0).div_(255).float()


def pca_features(train: Tensor, test: Tensor, dim: int = 100) -> tuple[Tensor, Tensor]:
    """Project (N, D) train and (M, D) test rows on the top-`dim` principal axes of the centred train rows.

    Returns float32 (N, dim), (M, dim), components ordered by decreasing variance; each axis's sign is
    fixed (largest-magnitude loading positive) so the result does not depend on the solver.
    """
    if train.dim() != 2 or test.dim() != 2 or train.shape[1] != test.shape[1]:
        raise ByonError(f"pca_features expects (N, D) and (M, D) features, got {tuple(train.shape)} "
                        f"and {tuple(test.shape)}")
    if not 1 <= dim <= min(train.shape):
        raise ByonError(f"PCA dim must be in [1, {min(train.shape)}] for train features of shape "
                        f"{tuple(train.shape)}, got {dim}")
    x = train.double()
    mu = x.mean(0)
    xc = x - mu
    # eigh of the D×D covariance: cheaper than an SVD of the N×D data when N ≫ D, exact in float64
    evals, evecs = torch.linalg.eigh(xc.T @ xc)
    axes = evecs[:, evals.argsort(descending=True)[:dim]]  # (D, dim)
    sign = axes.gather(0, axes.abs().argmax(0, keepdim=True)).sign()
    axes = axes * sign
    return (xc @ axes).float(), ((test.double() - mu) @ axes).float()
