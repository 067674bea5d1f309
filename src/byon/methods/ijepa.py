"""I-JEPA — Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture
(Assran et al., 2023; spec/baselines.md "I-JEPA"; the official code where it differs from the paper).

One step: multi-block masks (4 target blocks, one context block minus them) → the context encoder (no
CLS) on the context tokens → a narrow ViT predictor puts a mask token at every position of each target
block and predicts that block's representations → targets: the EMA target encoder on the full image, a
non-affine layer norm, gathered at the target positions → smooth-L1 (official code; the paper says L2).
EMA momentum rises linearly 0.996 → 1, weight decay follows a cosine 0.04 → 0.4 (the recipe below; the
engine applies `optim.weight_decay_end`). The target encoder, mean-pooled, is evaluated.

At our scale (7×7 tokens on 28-px images with 4-px patches): predictor width D/2 (384 = D/2 at ViT-B),
depth half the encoder's (6 of 12 at ViT-B, N-JEPA §4.2), the encoder's head count (official);
min_keep = 4 (the official 10 is for 14×14 grids; it must stay below the smallest target block, 6 tokens
here); the contexts are cut to the batch minimum by a random subset, not the official raster-first one
(`truncate`, corruption/multiblock.py: at 7×7 the official rule drops 91% of the bottom row's context
tokens). The recipe leaves the augmentation to the protocol (crop 0.6–1 + flip); the official crop (scale
0.3–1, no flip) is configs/ijepa/official_crop.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byon.corruption.multiblock import TRUNCATIONS, MultiBlockMaskCollator, MultiBlockMasks, gather_blocks
from byon.data import DataInfo
from byon.draws import Draw
from byon.errors import ByonError, unknown
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.ema import linear_momentum, make_target
from byon.nn.predictor import JEPAPredictor
from byon.nn.vit import EncoderShape, ViTEncoder

JEPA_LOSSES = ("smooth_l1", "l2")
EVAL_ENCODERS = ("target", "context")


@dataclass
class IJEPAConfig:
    # multi-block masking (§3, official MaskCollator)
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 4  # official 10 on 14×14 grids; below the smallest target block (6 tokens on 7×7)
    allow_overlap: bool = False
    truncate: str = "random"  # a random k-subset of each context | raster: the official first k (drops bottom rows)
    # predictor
    predictor_dim: int | None = None  # None: D/2
    predictor_depth: int | None = None  # None: half the encoder depth (at least 1)
    predictor_heads: int | None = None  # None: the encoder's
    loss: str = "smooth_l1"  # smooth_l1 (official code) | l2 (the paper's text)
    # EMA target encoder
    ema_base: float = 0.996
    ema_end: float = 1.0
    eval_encoder: str = "target"  # target (official) | context

    def validate(self, name: str = "ijepa") -> None:
        for key, valid in (("loss", JEPA_LOSSES), ("eval_encoder", EVAL_ENCODERS), ("truncate", TRUNCATIONS)):
            if getattr(self, key) not in valid:
                raise unknown(f"{name}.{key}", getattr(self, key), valid)
        if not 0.0 <= self.ema_base <= self.ema_end <= 1.0:
            raise ByonError(f"{name}.ema_base/ema_end must satisfy 0 ≤ ema_base ≤ ema_end ≤ 1, got "
                            f"{self.ema_base}, {self.ema_end}")


class IJEPA(Method):
    Config = IJEPAConfig
    # I-JEPA: AdamW (0.9, 0.999), lr 1e-3 at batch 2048 → 1.25e-4 · B/256, wd cosine 0.04 → 0.4. No data
    # section: the official crop (0.3–1, no flip) is not "more" augmentation than the benchmark protocol's
    # (0.6–1 + flip), so the protocol's applies; configs/ijepa/official_crop.yaml has the official one.
    recipe = {"optim": {"blr": 1.25e-4, "betas": [0.9, 0.999], "weight_decay": 0.04, "weight_decay_end": 0.4}}
    default_feature = "mean"
    readout = ("eval_encoder",)  # settable at evaluation (`byon eval --set`)
    name = "ijepa"

    def __init__(self, cfg: IJEPAConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate(self.name)
        self.cfg, self.shape, self.info = cfg, shape, info
        self.masks = MultiBlockMaskCollator(
            shape.grid, cfg.num_targets, cfg.target_scale, cfg.target_aspect, cfg.context_scale,
            min_keep=cfg.min_keep, allow_overlap=cfg.allow_overlap, truncate=cfg.truncate, name=self.name)
        self.encoder = ViTEncoder(shape, class_token=False)  # the context encoder
        self.target_encoder = make_target(self.encoder)
        self.predictor = self.make_predictor()

    def make_predictor(self, mask_token: bool = True) -> JEPAPredictor:
        cfg, s = self.cfg, self.shape
        dim = cfg.predictor_dim or s.embed_dim // 2
        heads = cfg.predictor_heads or s.num_heads
        if dim % 4 or dim % heads:
            raise ByonError(f"{self.name}.predictor_dim={dim} must be divisible by 4 (2-D sin-cos positions) and "
                            f"by {self.name}.predictor_heads={heads}; set both explicitly")
        depth = cfg.predictor_depth or max(s.depth // 2, 1)
        return JEPAPredictor(s.embed_dim, s.num_patches, dim, depth, heads, s.mlp_ratio, mask_token=mask_token)

    # --- 1. corrupt: multi-block masks -----------------------------------------------------------
    def sample_masks(self, batch_size: int, g: Draw) -> MultiBlockMasks:
        return self.masks.sample(batch_size, g)

    # --- 2. encode the context -------------------------------------------------------------------
    def encode_context(self, images: Tensor, m: MultiBlockMasks) -> Tensor:
        """images (B, C, H, W) → context tokens (B, K_c, D), final-normed."""
        return self.encoder.forward_encoder(images, ids_keep=m.context)

    # --- 3. targets ------------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, images: Tensor, m: MultiBlockMasks) -> Tensor:
        """EMA encoder on the full image → non-affine layer norm → (B, M, K_t, D) at the target blocks."""
        h = self.target_encoder.forward_encoder(images)  # (B, N, D)
        h = F.layer_norm(h, (h.shape[-1],))
        return gather_blocks(h, m.targets)

    # --- 4. loss ---------------------------------------------------------------------------------
    def prediction_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: (B, M, K_t, D) → mean over every element."""
        if self.cfg.loss == "smooth_l1":
            return F.smooth_l1_loss(pred.float(), target.float())
        return F.mse_loss(pred.float(), target.float())

    def mask_logs(self, m: MultiBlockMasks, pred: Tensor) -> dict[str, Tensor]:
        """Context/target sizes as fractions of the grid — context_drawn: the batch's mean context before the
        truncation to the batch minimum, context_keep: after it — and a collapse statistic: the per-dimension
        std over the batch of the L2-normalised mean prediction (0 when collapsed, ≈ 1/sqrt(D) when spread)."""
        N = self.shape.num_patches
        spread = F.normalize(pred.detach().float().mean(dim=(1, 2)), dim=-1).std(dim=0, correction=0).mean()
        return {"context_drawn": m.context_mask.float().sum(1).mean() / N,
                "context_keep": spread.new_tensor(m.context.shape[1] / N),
                "target_keep": spread.new_tensor(m.targets.shape[2] / N), "relaxed": m.relaxed.float().mean(),
                "pred_std": spread}

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        images = batch["image"]
        m = self.sample_masks(images.shape[0], ctx.generator)
        z = self.encode_context(images, m)
        pred = self.predictor(z, m.context, m.targets)  # (B, M, K_t, D)
        h = self.targets(images, m)
        loss = self.prediction_loss(pred, h)
        return {"loss": loss, "pred": loss.detach(), **self.mask_logs(m, pred)}

    # --- engine hooks ----------------------------------------------------------------------------
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder)]

    def ema_momentum(self, step: int, total_steps: int) -> float:
        return linear_momentum(self.cfg.ema_base, self.cfg.ema_end, step / total_steps)

    def eval_encoder(self) -> ViTEncoder:
        return self.target_encoder if self.cfg.eval_encoder == "target" else self.encoder


__all__ = ["EVAL_ENCODERS", "IJEPA", "IJEPAConfig", "JEPA_LOSSES"]
