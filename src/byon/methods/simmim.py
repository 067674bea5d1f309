"""SimMIM — a Simple Framework for Masked Image Modeling (Xie et al., 2022; spec/baselines.md).

The encoder sees every patch: masked ones have their patch embedding replaced by a learnable mask token
before the positional embedding. A single linear layer maps each output token back to its p·p·C pixels
(the official 1×1 conv + pixel-shuffle), and the loss is the L1 error on dataset-normalised pixels of the
masked patches only, divided by the number of masked values (no norm-pix).

Mask-patch size (`simmim.mask_patch`, in tokens). SimMIM masks 60 % of 32 px mask-patches on 224 px
images: a 7 × 7 grid of mask-patches, each 1/7 of the image side. At 28 px with patch 4 the token grid is
itself 7 × 7, so one token (4 px = 1/7 of the side) is the same mask-patch in relative size, and the
default is `mask_patch: 1` — 30 of the 49 tokens are masked. `mask_patch: 2` (8 px, the 2 × 2 tokens of
SimMIM's ViT-B setting) tiles the 7 × 7 grid with 4 × 4 mask-patches cropped at the edge, so the masked
fraction then varies per image around 0.6.

Sizes: the head is one Linear(D → p²C) (D = 128, p²C = 16 at vit-micro on Fashion-MNIST); nothing else
besides the encoder and the (1, 1, D) mask token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byon.corruption.masking import block_masking, check_ratio
from byon.corruption.patches import masked_panels, patchify
from byon.data import DataInfo
from byon.errors import ByonError
from byon.losses import masked_l1
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.vit import EncoderShape, ViTEncoder


@dataclass
class SimMIMConfig:
    mask_ratio: float = 0.6
    mask_patch: int = 1  # tokens per mask-patch side; 1 = 4 px = 1/7 of a 28 px image, as 32 px is of 224 px

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "simmim.mask_ratio")
        if self.mask_ratio == 0:
            raise ByonError("simmim.mask_ratio must be > 0 (nothing to predict otherwise), e.g. 0.6")
        if self.mask_patch < 1:
            raise ByonError(f"simmim.mask_patch must be at least 1 token, got {self.mask_patch}")


class SimMIM(Method):
    Config = SimMIMConfig
    # SimMIM ViT-B: AdamW (0.9, 0.999), wd 0.05, lr = 1e-4 · B / 512 (= 5e-5 · B / 256), grad-clip 5.
    # (Its multistep lr decay becomes the engine's warm-up + cosine.)
    recipe = {"optim": {"blr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 0.05, "grad_clip": 5.0}}
    default_feature = "mean"

    def __init__(self, cfg: SimMIMConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        self.encoder = ViTEncoder(shape)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, shape.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        self.head = nn.Linear(shape.embed_dim, shape.patch_dim)

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        images = batch["image"]  # (B, C, H, W), dataset-normalised
        B = images.shape[0]

        # 1. corrupt: mask a ratio of the mask-patches
        mask = block_masking(B, self.shape.grid, self.cfg.mask_patch, self.cfg.mask_ratio, ctx.generator,
                             images.device)  # (B, N) True = masked

        # 2. encode every token, the masked ones as the mask token
        tokens = self.encoder.forward_encoder(images, mask=mask, mask_token=self.mask_token)  # (B, 1 + N, D)

        # 3. predict the pixels of every patch
        pred = self.head(tokens[:, 1:])  # (B, N, p·p·C)

        # 4-5. L1 on the masked patches' dataset-normalised pixels
        loss = masked_l1(pred, patchify(images, self.shape.patch_size), mask)
        return {"loss": loss, "recon": loss.detach(), "mask_ratio": mask.float().mean()}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures (SimMIM figure 4), each (B, C, H, W) normalised: input, corrupted (masked patches grey),
        reconstruction (visible patches pasted + predicted masked ones), prediction (every patch)."""
        mask = block_masking(images.shape[0], self.shape.grid, self.cfg.mask_patch, self.cfg.mask_ratio, generator,
                             images.device)
        pred = self.head(self.encoder.forward_encoder(images, mask=mask, mask_token=self.mask_token)[:, 1:])
        return masked_panels(images, pred, mask, self.shape.patch_size)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}


__all__ = ["SimMIM", "SimMIMConfig"]
