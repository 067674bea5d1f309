"""The ViT encoder every method shares: timm's `VisionTransformer` plus the hooks MIM methods need.

The state dict is exactly timm's (`cls_token`, `pos_embed`, `patch_embed.*`, `blocks.*`, `norm.*`), so a
trained encoder loads into a plain `timm.models.VisionTransformer` of the same shape with strict=True.
Learnable mask embeddings belong to the methods and are passed in, which keeps that layout pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from byon.errors import ByonError, unknown
from byon.nn.pos_embed import sincos_2d

# name → (img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio); img_size None = the dataset's.
PRESETS: dict[str, tuple[int | None, int, int, int, int, float]] = {
    "vit-test": (None, 4, 32, 2, 2, 2.0),  # for tests only
    "vit-micro": (None, 4, 128, 6, 4, 4.0),
    "vit-tiny": (None, 4, 192, 12, 3, 4.0),
    "vit-small": (224, 16, 384, 12, 6, 4.0),
    "vit-base": (224, 16, 768, 12, 12, 4.0),
}


POS_EMBEDS = ("sincos", "learned")


@dataclass(frozen=True)
class EncoderShape:
    img_size: int
    in_chans: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    drop_path: float = 0.0
    pos_embed: str = "sincos"  # sincos: fixed 2-D sin-cos (MAE) | learned: a trained table (ViT, timm)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.in_chans


def resolve_shape(model_cfg, img_size: int, in_chans: int) -> EncoderShape:
    """Fill a ModelConfig's None fields from its preset and the dataset; validate the result."""
    if model_cfg.preset not in PRESETS:
        raise unknown("model preset", model_cfg.preset, PRESETS)
    p_img, p_patch, p_dim, p_depth, p_heads, p_mlp = PRESETS[model_cfg.preset]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    shape = EncoderShape(
        img_size=pick(model_cfg.img_size, p_img or img_size),
        in_chans=pick(model_cfg.in_chans, in_chans),
        patch_size=pick(model_cfg.patch_size, p_patch),
        embed_dim=pick(model_cfg.embed_dim, p_dim),
        depth=pick(model_cfg.depth, p_depth),
        num_heads=pick(model_cfg.num_heads, p_heads),
        mlp_ratio=pick(model_cfg.mlp_ratio, p_mlp),
        drop_path=model_cfg.drop_path,
        pos_embed=model_cfg.pos_embed,
    )
    if shape.pos_embed not in POS_EMBEDS:
        raise unknown("model.pos_embed", shape.pos_embed, POS_EMBEDS)
    if shape.in_chans != in_chans:
        raise ByonError(f"the model expects {shape.in_chans} channels but the dataset has {in_chans}; "
                        f"drop model.in_chans or set it to {in_chans}")
    if shape.img_size != img_size:
        raise ByonError(f"the model expects {shape.img_size}px images but the dataset has {img_size}px; "
                        f"set model.img_size={img_size} (or resize the data)")
    if shape.img_size % shape.patch_size:
        raise ByonError(f"image size {shape.img_size} is not divisible by patch size {shape.patch_size}; "
                        f"choose a patch size that divides it (e.g. set model.patch_size=4)")
    if shape.embed_dim % shape.num_heads:
        raise ByonError(f"embed_dim {shape.embed_dim} is not divisible by num_heads {shape.num_heads}")
    if shape.embed_dim % 4:
        raise ByonError(f"embed_dim {shape.embed_dim} must be divisible by 4 (2-D sin-cos embedding)")
    return shape


def init_mae_(module: nn.Module) -> None:
    """MAE init: xavier-uniform linears, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def attention_weights(block: nn.Module, x: Tensor) -> Tensor:
    """Materialise a timm Block's attention probabilities. x: (B, L, D) block input → (B, H, L, L)."""
    attn = block.attn
    h = block.norm1(x)
    B, L, _ = h.shape
    qkv = attn.qkv(h).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


class ViTEncoder(VisionTransformer):
    """ViT with CLS token (class_token=False: none, as I-JEPA), 2-D sin-cos positions (fixed; or a learned table,
    `shape.pos_embed`) and MIM hooks.

    Hooks: `embed` (mask embedding substitution, keep-index subsets), `forward_tokens` (intermediate
    block outputs, per-block callbacks, attention weights), `features` (CLS / mean-of-patches).
    """

    def __init__(self, shape: EncoderShape, class_token: bool = True) -> None:
        # class_token=False (I-JEPA): no CLS token or slot — timm's class_token=False, global_pool="avg" layout
        super().__init__(
            img_size=shape.img_size, patch_size=shape.patch_size, in_chans=shape.in_chans, num_classes=0,
            global_pool="token" if class_token else "avg", embed_dim=shape.embed_dim, depth=shape.depth,
            num_heads=shape.num_heads, mlp_ratio=shape.mlp_ratio, qkv_bias=True, class_token=class_token,
            fc_norm=False, drop_path_rate=shape.drop_path,  # fc_norm=False: the final norm stays per token
        )
        self.shape = shape
        pe = sincos_2d(shape.embed_dim, shape.grid, shape.grid, cls_token=class_token)
        learned = shape.pos_embed == "learned"
        if learned:
            pe = nn.init.trunc_normal_(torch.empty_like(pe), std=0.02)  # ViT's learned table, timm's init
        self.pos_embed = nn.Parameter(pe, requires_grad=learned)
        init_mae_(self)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.shape.num_patches

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def embed(self, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None,
              ids_keep: Tensor | None = None) -> Tensor:
        """images (B, C, H, W) → tokens (B, 1 + N', D) with positions added ((B, N', D) without a CLS token).

        mask: (B, N) bool, True where the patch embedding is replaced by `mask_token` (1, 1, D).
        ids_keep: (B, K) indices of the patch tokens to keep (MAE-style subset), applied after positions.
        """
        x = self.patch_embed(images)
        if mask is not None:
            if mask_token is None:
                raise ValueError("embed: a mask needs a mask_token")
            w = mask.unsqueeze(-1).to(x.dtype)
            x = x * (1 - w) + mask_token.to(x.dtype) * w
        x = x + self.pos_embed[:, self.num_prefix_tokens:].to(x.dtype)
        if ids_keep is not None:
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        if self.cls_token is None:
            return x
        cls = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def patch_embeddings(self, images: Tensor) -> Tensor:
        """Patch embeddings + positions of every patch, no CLS. (B, C, H, W) → (B, N, D)."""
        return self.patch_embed(images) + self.pos_embed[:, self.num_prefix_tokens:].to(images.dtype)

    def forward_tokens(
        self,
        x: Tensor,
        return_layers: Sequence[int] = (),
        hooks: dict[int, Callable[[Tensor], Tensor]] | None = None,
        return_attn: Sequence[int] = (),
        norm: bool = True,
    ) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:
        """Run the blocks on embedded tokens x: (B, L, D).

        hooks[i] maps block i's output to a replacement (e.g. feature-space noise after block i).
        Returns (final tokens, {i: output of block i}, {i: attention (B, H, L, L) inside block i}).
        """
        inter: dict[int, Tensor] = {}
        attn: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if i in return_attn:
                attn[i] = attention_weights(blk, x)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if hooks and i in hooks:
                x = hooks[i](x)
            if i in return_layers:
                inter[i] = x
        if norm:
            x = self.norm(x)
        return x, inter, attn

    def forward_encoder(self, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None,
                        ids_keep: Tensor | None = None) -> Tensor:
        """images → final-normed tokens (B, 1 + N', D)."""
        return self.forward_tokens(self.embed(images, mask, mask_token, ids_keep))[0]

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """timm API (what timm's `forward` calls), same numbers as timm's; masks belong to `forward_encoder`."""
        if attn_mask is not None or is_causal:
            raise ByonError("ViTEncoder takes no attention mask; use forward_encoder(mask=...) for masked images")
        return self.forward_encoder(x)

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """Frozen-eval features: {'cls': (B, D), 'mean': (B, D) mean of patch tokens}. Without a CLS token
        'cls' is the mean as well (timm's pooled output for global_pool="avg")."""
        tokens = self.forward_encoder(images)
        if self.cls_token is None:
            mean = tokens.mean(dim=1)
            return {"cls": mean, "mean": mean}
        return {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(dim=1)}


def build_encoder(shape: EncoderShape) -> ViTEncoder:
    return ViTEncoder(shape)


__all__ = ["PRESETS", "EncoderShape", "ViTEncoder", "attention_weights", "build_encoder", "resolve_shape"]
