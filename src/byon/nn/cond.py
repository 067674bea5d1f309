"""Timestep conditioning: sinusoidal embedding + MLP (DDPM/DiT) and DiT's adaLN-Zero block."""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from byon.nn.pos_embed import timestep_embedding


class TimestepEmbedder(nn.Module):
    """t: (B,) or (B, L), integer or fractional → (…, dim): sinusoid(t·t_scale) → Linear → SiLU → Linear."""

    def __init__(self, dim: int, freq_dim: int = 256, t_scale: float = 1.0) -> None:
        super().__init__()
        self.freq_dim, self.t_scale = freq_dim, t_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        flat = t.reshape(-1).float() * self.t_scale
        emb = timestep_embedding(flat, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb).reshape(*t.shape, -1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def _per_token(c: Tensor) -> Tensor:
    """Conditioning (B, D) per image or (B, L, D) per token → broadcastable against (B, L, D)."""
    return c.unsqueeze(1) if c.dim() == 2 else c


class AdaLNBlock(nn.Module):
    """DiT block with adaLN-Zero: c → (shift, scale, gate) × (attention, MLP); the modulation is
    zero-initialised, so every block starts as the identity.  x: (B, L, D); c: (B, D) or (B, L, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=partial(nn.GELU, approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        zero_(self.adaLN_modulation[-1])

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = _per_token(self.adaLN_modulation(c)).chunk(6, dim=-1)
        x = x + g1 * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))


class AdaLNFinal(nn.Module):
    """DiT's final layer norm: LN without affine, then shift/scale from c (zero-initialised)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        zero_(self.adaLN_modulation[-1])

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = _per_token(self.adaLN_modulation(c)).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


@torch.no_grad()
def zero_(layer: nn.Linear) -> None:
    layer.weight.zero_()
    if layer.bias is not None:
        layer.bias.zero_()


__all__ = ["AdaLNBlock", "AdaLNFinal", "TimestepEmbedder", "modulate", "zero_"]
