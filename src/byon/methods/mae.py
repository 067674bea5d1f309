"""MAE — Masked Autoencoders Are Scalable Vision Learners (He et al., 2022).

Encoder on the visible 25 % of patches, a light decoder that re-inserts mask tokens, and a per-patch
MSE on norm-pix targets of the masked patches only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byon.corruption.masking import check_ratio, masked_mean, random_masking
from byon.corruption.patches import denorm_pix, masked_panels, norm_pix, patchify
from byon.data import DataInfo
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.decoders import MAEDecoder
from byon.nn.vit import EncoderShape, ViTEncoder


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75
    norm_pix: bool = True
    decoder_dim: int | None = None  # None: the encoder width (512 at ViT-B scale ≈ 2/3·D; we keep D)
    decoder_depth: int = 2  # 8 at ViT-B scale; 2 suits 6-block encoders
    decoder_heads: int | None = None  # None: the encoder's

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "mae.mask_ratio")


class MAE(Method):
    Config = MAEConfig
    # MAE's pretraining recipe: AdamW (0.9, 0.95), wd 0.05, lr = 1.5e-4 · B / 256, warm-up + cosine.
    recipe = {"optim": {"blr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}}
    default_feature = "mean"

    def __init__(self, cfg: MAEConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        self.cfg, self.shape, self.info = cfg, shape, info
        self.encoder = ViTEncoder(shape)
        self.decoder = MAEDecoder(
            embed_dim=shape.embed_dim, num_patches=shape.num_patches, patch_dim=shape.patch_dim,
            dim=cfg.decoder_dim or shape.embed_dim, depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads or shape.num_heads, mlp_ratio=shape.mlp_ratio,
        )

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        images = batch["image"]  # (B, C, H, W), dataset-normalised
        B = images.shape[0]

        # 1. corrupt: keep a random 1 − r of the patches
        m = random_masking(B, self.shape.num_patches, self.cfg.mask_ratio, ctx.generator, images.device)

        # 2. encode the visible patches (+ CLS)
        latent = self.encoder.forward_encoder(images, ids_keep=m.ids_keep)  # (B, 1 + K, D)

        # 3. decode every patch
        pred = self.decoder(latent, m.ids_restore)  # (B, N, p·p·C)

        # 4. targets: per-patch normalised pixels
        target = patchify(images, self.shape.patch_size)
        if self.cfg.norm_pix:
            target = norm_pix(target)

        # 5. loss: per-patch MSE, averaged over masked patches only
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
        loss = masked_mean(per_patch, m.mask)
        return {"loss": loss, "recon": loss.detach()}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures (MAE figure 2), each (B, C, H, W) in normalised image space: input, corrupted (masked
        patches grey), reconstruction (visible patches pasted + predicted masked ones), prediction (every patch).
        Norm-pix predictions get each patch's own input mean/var back, as MAE's visualisation does."""
        p = self.shape.patch_size
        m = random_masking(images.shape[0], self.shape.num_patches, self.cfg.mask_ratio, generator, images.device)
        pred = self.decoder(self.encoder.forward_encoder(images, ids_keep=m.ids_keep), m.ids_restore)
        if self.cfg.norm_pix:
            pred = denorm_pix(pred, patchify(images, p))
        return masked_panels(images, pred, m.mask, p)
