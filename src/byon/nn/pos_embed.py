"""Fixed 2-D sin-cos positional embeddings (MAE's `get_2d_sincos_pos_embed`)."""

from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: (M,) → (M, dim) as [sin | cos] with frequencies 1/10000^(2i/dim)."""
    assert dim % 2 == 0, "sin-cos embedding needs an even dimension"
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """(1 [+1], grid_h·grid_w, dim): half the channels encode the row, half the column; CLS slot zero."""
    assert dim % 4 == 0, "2-D sin-cos embedding needs embed_dim divisible by 4"
    gh, gw = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    # MAE's convention: first half encodes the w coordinate, second half the h coordinate.
    emb = torch.cat([sincos_1d(dim // 2, gw), sincos_1d(dim // 2, gh)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb.unsqueeze(0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps. t: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(max_period)) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
