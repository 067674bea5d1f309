"""Patchify in MAE's (h, w, p, q, c) order, and the norm-pix target."""

from __future__ import annotations

import torch
from torch import Tensor


def patchify(images: Tensor, p: int) -> Tensor:
    """(B, C, H, W) → (B, N, p·p·C), patches row-major, values ordered (p, q, c)."""
    B, C, H, W = images.shape
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: Tensor, p: int, channels: int) -> Tensor:
    """(B, N, p·p·C) → (B, C, H, W); inverse of `patchify` for square grids."""
    B, N, _ = x.shape
    h = w = int(round(N**0.5))
    if h * w != N:
        raise ValueError(f"unpatchify needs a square token grid, got N={N}")
    x = x.reshape(B, h, w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, channels, h * p, w * p)


def norm_pix(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalisation (x − mean) / sqrt(var_unbiased + eps). target: (B, N, P)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True, unbiased=True)
    return (target - mean) / (var + eps) ** 0.5


def denorm_pix(pred: Tensor, reference: Tensor, eps: float = 1e-6) -> Tensor:
    """Undo `norm_pix` for display: give norm-pix predictions (B, N, P) the per-patch mean/var of `reference`
    (B, N, P), the patchified input, as MAE's visualisation does."""
    return pred * (reference.var(dim=-1, keepdim=True) + eps) ** 0.5 + reference.mean(dim=-1, keepdim=True)


def masked_panels(images: Tensor, pred: Tensor, mask: Tensor, p: int, shown: Tensor | None = None,
                  pasted: Tensor | None = None) -> dict[str, Tensor]:
    """The panels of a masked-prediction figure (MAE figure 2), each (B, C, H, W) in the normalised space of
    `images` (B, C, H, W): input; corrupted — `shown` (B, N, P), the patches as the network saw them (default:
    the masked ones 0, i.e. the dataset mean, the rest clean); reconstruction — the prediction at `pasted`
    (B, N) bool (default: `mask`), the clean patches elsewhere; prediction — `pred` (B, N, P) at every patch."""
    x, C = patchify(images, p), images.shape[1]
    masked = mask.unsqueeze(-1)
    shown = x.masked_fill(masked, 0) if shown is None else shown
    pasted = masked if pasted is None else pasted.unsqueeze(-1)
    return {"input": images, "corrupted": unpatchify(shown, p, C),
            "reconstruction": unpatchify(torch.where(pasted, pred, x), p, C), "prediction": unpatchify(pred, p, C)}
