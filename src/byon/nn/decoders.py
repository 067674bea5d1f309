"""Light transformer decoders (MAE-style), built from timm blocks."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention, Block
from torch import Tensor, nn

from byon.corruption.masking import TokenMask, gather_tokens, restore_tokens
from byon.errors import unknown
from byon.nn.cond import AdaLNBlock, AdaLNFinal, TimestepEmbedder, zero_
from byon.nn.pos_embed import sincos_2d
from byon.nn.vit import init_mae_

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class MAEDecoder(nn.Module):
    """Linear(D→Dd) → insert mask tokens, unshuffle → fixed pos-embed → k blocks → LN → Linear(Dd→P).

    forward(latent (B, 1+K, D), ids_restore (B, N)) → predictions (B, N, P) for every patch (CLS dropped).
    """

    def __init__(self, embed_dim: int, num_patches: int, patch_dim: int, dim: int = 128, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        grid = int(round(num_patches**0.5))
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid, grid, cls_token=True), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm6)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_dim)
        init_mae_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "pos_embed"}

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(latent)
        patches = restore_tokens(x[:, 1:], self.mask_token, ids_restore)
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]


CONDITIONINGS = ("add", "adaln", "none")


class CondDecoder(nn.Module):
    """Timestep-conditioned light decoder (BYON eq. 11, spec/byon.md item 6; reused by MaskDiT, l-DAE, DDAE).

    Linear(D→Dd) → [ids_restore given: insert mask tokens and unshuffle, MAE-style] → + fixed 2-D sin-cos
    pos-embed → conditioning c = MLP(sinusoid(t)) (+ an optional extra vector) → k blocks → LN → Linear(Dd→P).
    cond "add": c is added to every token, then timm Blocks; "adaln": DiT adaLN-Zero blocks and final
    norm (zero-initialised modulation) and, as DiT and MaskDiT do, a zero-initialised Linear(Dd→P), so the
    prediction is 0 at init; "none": t is ignored.

    forward(latent (B, [1+]L, D), t, ids_restore=None, cond=None) → (B, N, P) per patch (CLS dropped):
      latent holds all N patch tokens, or the K kept ones in shuffled order when ids_restore (B, N) is given;
      t: (B,) per image or (B, N) per patch (the CLS slot then gets the mean patch conditioning), integer
      or fractional (t_scale multiplies it before the sinusoid, e.g. 1000 for EDM's c_noise);
      cond: an extra conditioning vector (B, Dd) or (B, N, Dd) added to the timestep's.
    mask_token=False builds no mask token (for encoders that see every token).
    """

    def __init__(self, embed_dim: int, num_patches: int, patch_dim: int, dim: int = 128, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0, cond: str = "add", freq_dim: int = 256,
                 t_scale: float = 1.0, cls_token: bool = True, mask_token: bool = True) -> None:
        super().__init__()
        if cond not in CONDITIONINGS:
            raise unknown("decoder conditioning", cond, CONDITIONINGS)
        grid = int(round(num_patches**0.5))
        self.cond, self.has_cls = cond, cls_token
        self.embed = nn.Linear(embed_dim, dim)
        # Only the kept-tokens path uses a mask token; without it no parameter sits unused (DDP).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        pe = sincos_2d(dim, grid, grid, cls_token=cls_token)
        self.pos_embed = nn.Parameter(pe, requires_grad=False)
        self.t_embed = TimestepEmbedder(dim, freq_dim, t_scale) if cond != "none" else None
        if cond == "adaln":
            self.blocks = nn.ModuleList([AdaLNBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
            self.norm: nn.Module = AdaLNFinal(dim)
        else:
            self.blocks = nn.ModuleList([
                Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm6) for _ in range(depth)])
            self.norm = LayerNorm6(dim)
        self.pred = nn.Linear(dim, patch_dim)
        init_mae_(self)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():  # adaLN-Zero: after init_mae_, which re-initialised every Linear
            if hasattr(m, "adaLN_modulation"):
                zero_(m.adaLN_modulation[-1])
        if cond == "adaln":  # DiT's final layer: F ≡ 0 at init
            zero_(self.pred)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "pos_embed"}

    def conditioning(self, t: Tensor | None, cond: Tensor | None, B: int) -> Tensor | None:
        """(B, Dd) per image or (B, [1+]N, Dd) per token (CLS slot included when the decoder has one)."""
        c = None if self.t_embed is None or t is None else self.t_embed(t)
        if cond is not None:
            c = cond if c is None else c + cond
        if c is not None and c.dim() == 3 and self.has_cls and c.shape[1] == self.pos_embed.shape[1] - 1:
            c = torch.cat([c.mean(dim=1, keepdim=True), c], dim=1)
        return c

    def forward(self, latent: Tensor, t: Tensor | None = None, ids_restore: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        x = self.embed(latent)
        if ids_restore is not None:
            if self.mask_token is None:
                raise ValueError("CondDecoder built with mask_token=False cannot insert masked tokens")
            s = 1 if self.has_cls else 0
            patches = restore_tokens(x[:, s:], self.mask_token, ids_restore)
            x = torch.cat([x[:, :s], patches], dim=1)
        x = x + self.pos_embed.to(x.dtype)
        c = self.conditioning(t, cond, x.shape[0])
        if c is not None:
            c = c.to(x.dtype)
        if self.cond == "adaln":
            for blk in self.blocks:
                x = blk(x, c)
            x = self.norm(x, c)
        else:
            if c is not None:
                x = x + (c.unsqueeze(1) if c.dim() == 2 else c)
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
        out = self.pred(x)
        return out[:, 1:] if self.has_cls else out


DIFFUSION_ATTENTION = ("joint", "cross", "cross-self")


class CrossAttention(nn.Module):
    """Multi-head attention of queries x (B, M, D) over a context (B, L, D) → (B, M, D)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        (B, M, D), L, h = x.shape, context.shape[1], self.num_heads
        q = self.q(x).reshape(B, M, h, D // h).transpose(1, 2)
        k, v = self.kv(context).reshape(B, L, 2, h, D // h).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, M, D))


class CrossBlock(nn.Module):
    """Pre-norm decoder block for queries reading a context: x ← x + CrossAttn(LN(x), LN(ctx)),
    [x ← x + SelfAttn(LN(x)) when self_attn], x ← x + MLP(LN(x)). x: (B, M, D); context: (B, L, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, self_attn: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm_ctx = LayerNorm6(dim), LayerNorm6(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.norm_self = LayerNorm6(dim) if self_attn else None
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True) if self_attn else None
        self.norm2 = LayerNorm6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.cross(self.norm1(x), self.norm_ctx(context))
        if self.attn is not None:
            x = x + self.attn(self.norm_self(x))
        return x + self.mlp(self.norm2(x))


class DiffusionDecoder(nn.Module):
    """DiffMAE's decoder: clean visible latents + noisy masked patches (+ the timestep) → clean patches.

    Visible tokens: Linear(D→Dd)(latent) + pos; noisy masked tokens: Linear(P→Dd)(x_t) + pos + MLP(sinusoid(t)),
    both with the fixed 2-D sin-cos positions of their patches. attention:
      "joint": one sequence [CLS, the N patch positions holding visible latents or noisy tokens] through timm
               Blocks — MAE's decoder with each mask token replaced by its noisy patch;
      "cross": the noisy tokens are queries that cross-attend to [CLS + visible] and never to each other;
      "cross-self": cross-attention, then self-attention among the noisy tokens.
    forward(latent (B, 1+K, D) in `m`'s kept order, x_t (B, N, P) noisy patches (read at masked positions only),
    m: TokenMask, t (B,)) → (B, N, P); only masked positions are predictions (the cross variants leave 0 elsewhere).
    """

    def __init__(self, embed_dim: int, num_patches: int, patch_dim: int, dim: int = 128, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0, attention: str = "joint", freq_dim: int = 256) -> None:
        super().__init__()
        if attention not in DIFFUSION_ATTENTION:
            raise unknown("decoder attention", attention, DIFFUSION_ATTENTION)
        grid = int(round(num_patches**0.5))
        self.attention = attention
        self.embed = nn.Linear(embed_dim, dim)
        self.noisy_embed = nn.Linear(patch_dim, dim)
        self.t_embed = TimestepEmbedder(dim, freq_dim)
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid, grid, cls_token=True), requires_grad=False)
        if attention == "joint":
            self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm6)
                                         for _ in range(depth)])
        else:
            self.blocks = nn.ModuleList([CrossBlock(dim, num_heads, mlp_ratio, self_attn=attention == "cross-self")
                                         for _ in range(depth)])
        self.norm = LayerNorm6(dim)
        self.pred = nn.Linear(dim, patch_dim)
        init_mae_(self)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, latent: Tensor, x_t: Tensor, m: TokenMask, t: Tensor) -> Tensor:
        vis = self.embed(latent)  # (B, 1+K, Dd)
        pos = self.pos_embed.to(vis.dtype)
        cls = vis[:, :1] + pos[:, :1]
        noisy = self.noisy_embed(x_t) + pos[:, 1:] + self.t_embed(t).unsqueeze(1).to(vis.dtype)  # (B, N, Dd)
        if self.attention == "joint":
            vis_full = restore_tokens(vis[:, 1:], vis.new_zeros(1, 1, vis.shape[-1]), m.ids_restore) + pos[:, 1:]
            x = torch.cat([cls, torch.where(m.mask.unsqueeze(-1), noisy, vis_full)], dim=1)
            for blk in self.blocks:
                x = blk(x)
            return self.pred(self.norm(x))[:, 1:]
        ids_masked = m.ids_restore.argsort(dim=1)[:, m.num_keep:]  # (B, M) the masked positions
        context = torch.cat([cls, vis[:, 1:] + gather_tokens(pos[:, 1:].expand(len(vis), -1, -1), m.ids_keep)], 1)
        x = gather_tokens(noisy, ids_masked)
        for blk in self.blocks:
            x = blk(x, context)
        out = self.pred(self.norm(x))  # (B, M, P)
        full = out.new_zeros(*x_t.shape[:2], out.shape[-1])
        return full.scatter(1, ids_masked.unsqueeze(-1).expand_as(out), out)
