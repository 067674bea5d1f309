"""I-JEPA's narrow ViT predictor (Assran et al. 2023, §3; shared by I-JEPA and N-JEPA)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from byon.corruption.multiblock import gather_blocks
from byon.nn.decoders import LayerNorm6
from byon.nn.pos_embed import sincos_2d
from byon.nn.vit import init_mae_


class JEPAPredictor(nn.Module):
    """Linear(D→Dp) + fixed 2-D sin-cos positions on the context tokens; per target block, a mask token +
    the positions of that block's patches (+ optional position noise, N-JEPA); k blocks over [context;
    mask tokens] → LN → Linear(Dp→D) on the mask tokens only.

    forward(context (B, K_c, D), context_ids (B, K_c), target_ids (B, M, K_t)) → (B, M, K_t, D): each of
    the M blocks is predicted in its own pass (the batch is repeated M times), so blocks never see each
    other. pos_noise: (B, M, K_t, Dp) added to the target positions; mask_token: (1, 1, Dp) to use instead
    of this predictor's own (N-JEPA's shared mask tokens; build with mask_token=False then).
    """

    def __init__(self, embed_dim: int, num_patches: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, mask_token: bool = True) -> None:
        super().__init__()
        grid = int(round(num_patches**0.5))
        self.dim = dim
        self.predictor_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid, grid, cls_token=False), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm6)
                                     for _ in range(depth)])
        self.norm = LayerNorm6(dim)
        self.predictor_proj = nn.Linear(dim, embed_dim)
        init_mae_(self)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "pos_embed"}

    def forward(self, context: Tensor, context_ids: Tensor, target_ids: Tensor, pos_noise: Tensor | None = None,
                mask_token: Tensor | None = None) -> Tensor:
        B, K_c, _ = context.shape
        _, M, K_t = target_ids.shape
        pos = self.pos_embed.to(context.dtype).expand(B, -1, -1)  # (B, N, Dp)
        x = self.predictor_embed(context) + gather_blocks(pos, context_ids[:, None])[:, 0]  # (B, K_c, Dp)
        x = x[:, None].expand(-1, M, -1, -1).reshape(B * M, K_c, self.dim)
        target_pos = gather_blocks(pos, target_ids)  # (B, M, K_t, Dp)
        if pos_noise is not None:
            target_pos = target_pos + pos_noise.to(target_pos.dtype)
        token = self.mask_token if mask_token is None else mask_token
        if token is None:
            raise ValueError("JEPAPredictor built with mask_token=False needs a mask_token argument")
        x = torch.cat([x, (token.to(x.dtype) + target_pos).reshape(B * M, K_t, self.dim)], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.predictor_proj(self.norm(x[:, K_c:]))
        return x.view(B, M, K_t, -1)


__all__ = ["JEPAPredictor"]
