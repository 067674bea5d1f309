"""Timestep conditioning: sinusoidal embedding + MLP (DDPM/DiT) and DiT's adaLN-Zero block."""

from __future__ import annotations

import copy
from functools import partial

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Attention
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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


class BlockModulation(nn.Module):
    """adaLN-Zero for the blocks of an existing timm ViT (MaskDiT conditions the shared `ViTEncoder` this way):
    per block SiLU → Linear(cond_dim → 6·D), zero-initialised, so every modulated block starts as the identity.
    The modulation lives outside the encoder, whose state dict stays timm's. forward(c (B, cond_dim)) → one
    (B, 6·D) modulation per block."""

    def __init__(self, dim: int, depth: int, cond_dim: int | None = None) -> None:
        super().__init__()
        self.adaLN_modulation = nn.ModuleList(
            [nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, 6 * dim)) for _ in range(depth)])
        for m in self.adaLN_modulation:
            zero_(m[-1])

    def forward(self, c: Tensor) -> list[Tensor]:
        return [m(c) for m in self.adaLN_modulation]


def modulated_block(block: nn.Module, x: Tensor, mod: Tensor) -> Tensor:
    """A timm `Block` run as a DiT block: x: (B, L, D); mod: (B, 6·D) = (shift, scale, gate) × (attn, MLP).
    The block's own LayerNorm affine, LayerScale and drop-path stay in place."""
    sh1, sc1, g1, sh2, sc2, g2 = _per_token(mod).chunk(6, dim=-1)
    x = x + block.drop_path1(block.ls1(g1 * block.attn(modulate(block.norm1(x), sh1, sc1))))
    return x + block.drop_path2(block.ls2(g2 * block.mlp(modulate(block.norm2(x), sh2, sc2))))


def modulated_blocks(encoder: nn.Module, x: Tensor, mods: list[Tensor]) -> Tensor:
    """x (B, L, D) through every encoder block, block i under mods[i] (B, 6·D); no final norm. With the
    encoder's `grad_checkpointing` (timm's flag, set by `model.grad_checkpointing`) each block is recomputed
    in backward, as in `ViTEncoder.forward_tokens`."""
    ckpt = getattr(encoder, "grad_checkpointing", False) and encoder.training and torch.is_grad_enabled()
    for blk, mod in zip(encoder.blocks, mods):
        x = checkpoint(modulated_block, blk, x, mod, use_reentrant=False) if ckpt else modulated_block(blk, x, mod)
    return x


def forward_modulated(encoder: nn.Module, tokens: Tensor, modulation: BlockModulation, c: Tensor) -> Tensor:
    """Embedded tokens (B, L, D) through every encoder block under conditioning c (B, cond_dim), then the
    encoder's final norm → (B, L, D)."""
    return encoder.norm(modulated_blocks(encoder, tokens, modulation(c)))


@torch.no_grad()
def fold_modulation(encoder: nn.Module, modulation: BlockModulation, c: Tensor, input_scale: float = 1.0) -> nn.Module:
    """A plain copy of a timm ViT whose forward equals `forward_modulated` at one fixed conditioning c
    (cond_dim,) on inputs multiplied by `input_scale` — so a conditioned encoder probed at a fixed noise level
    exports as an ordinary timm model. Shift/scale fold into the LayerNorm affine ((w·n + b)(1 + sc) + sh),
    the gates into the rows of attn.proj and mlp.fc2, the input scale into the patch-embedding weight."""
    enc = copy.deepcopy(encoder)
    enc.patch_embed.proj.weight.mul_(input_scale)
    for blk, mod in zip(enc.blocks, modulation(c.reshape(1, -1))):
        fold_block_modulation_(blk, mod[0])
    return enc


@torch.no_grad()
def fold_block_modulation_(block: nn.Module, mod: Tensor) -> None:
    """Fold one fixed modulation mod (6·D,) = (shift, scale, gate) × (attn, MLP) into a timm `Block` in place,
    so that its plain forward equals `modulated_block` under mod: shift/scale into the LayerNorm affine
    ((w·n + b)(1 + sc) + sh), the gates into the rows of attn.proj and mlp.fc2."""
    sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6)
    for norm, sh, sc in ((block.norm1, sh1, sc1), (block.norm2, sh2, sc2)):
        norm.bias.mul_(1 + sc).add_(sh)
        norm.weight.mul_(1 + sc)
    for lin, g in ((block.attn.proj, g1), (block.mlp.fc2, g2)):
        lin.weight.mul_(g[:, None])
        lin.bias.mul_(g)


@torch.no_grad()
def zero_(layer: nn.Linear) -> None:
    layer.weight.zero_()
    if layer.bias is not None:
        layer.bias.zero_()


__all__ = ["AdaLNBlock", "AdaLNFinal", "BlockModulation", "TimestepEmbedder", "fold_block_modulation_",
           "fold_modulation", "forward_modulated",
           "modulate", "modulated_block", "modulated_blocks", "zero_"]
