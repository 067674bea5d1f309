"""BYOL — Bootstrap Your Own Latent (Grill et al., 2020; spec/baselines.md "BYOL").

One step: two augmented views of the un-augmented batch → online encoder (CLS) → projector → predictor;
target = EMA encoder + projector (no gradient) → symmetric loss (2 − 2·cos(p₁, z₂)) + (2 − 2·cos(p₂, z₁)).
The EMA momentum follows BYOL's cosine schedule to 1. The online encoder is evaluated. Heads, EMA teacher and
the cosine loss are BYON's contrastive-branch pieces (methods/base.py `BootstrapTeacher`, losses/bootstrap.py).
BYOL draws both views itself (`augment_batch = False`): the engine's view would go unused.

Augmentations (BYOL table 6), adapted to small and grayscale images:
  random resized crop, scale (0.2, 1.0) (BYOL: 0.08 — an 8-px crop of a 28-px image keeps little; 0.2 as
  MoCo v2/v3), aspect (3/4, 4/3); horizontal flip p 0.5;
  colour jitter p 0.8 (brightness 0.4, contrast 0.4, saturation 0.2; hue 0.1 omitted — data/transforms.py
  has none) and grayscale p 0.2, both only when the images have colour;
  Gaussian blur p (1.0, 0.1) for (view 1, view 2), σ = BYOL's (0.1, 2.0) px at 224 px scaled to the image
  size: (0.0125, 0.25) px at 28 px, (0.014, 0.29) at 32 px (BYOL blurs with a kernel 10 % of the image).
  At these sizes the blur is effectively a no-op — at σ ≤ 0.25 px (28 px) each output pixel is ≥ 99.8 % its
  own input (≥ 99.1 % at 32 px) — kept for fidelity to the recipe; `blur_sigma` sets a visible one;
  solarise p (0.0, 0.2), threshold 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from byon.data import DataInfo
from byon.data.transforms import color_jitter, gaussian_blur, hflip, random_grayscale, random_resized_crop, solarize
from byon.draws import Draw
from byon.errors import ByonError, unknown
from byon.losses import bootstrap_cosine
from byon.methods.base import BootstrapTeacher
from byon.methods.context import StepContext
from byon.nn.vit import EncoderShape, ViTEncoder

ENCODER_PASSES = ("per_view", "joint")


@dataclass
class BYOLConfig:
    # heads (BYOL: 4096 hidden, 256 out on a 2048-d ResNet-50)
    proj_hidden: int | None = None  # None: 4·D
    proj_dim: int = 256
    # EMA target: τ = 1 − (1 − τ_base)·(cos(π·k/K) + 1)/2
    ema_base: float = 0.99  # 0.996 for BYOL's 1000-epoch runs; 0.99 for short ones
    ema_end: float = 1.0
    # views (module docstring); two-element tuples are (view 1, view 2)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    jitter: float = 0.8  # colour images only
    grayscale: float = 0.2  # colour images only
    blur: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] | None = None  # None: (0.1, 2.0)·img_size/224 px
    solarize: tuple[float, float] = (0.0, 0.2)
    # per_view: one encoder pass per view. joint: both views as one batch of 2B (the paper's code). The same
    # numbers up to float rounding (the encoders have LayerNorm only), but the joint batch's activations exceed
    # glibc's mmap threshold on CPU: ~350k page faults a step, ~15 % slower at fmnist-cpu shapes (CPU runs now also
    # keep freed memory mapped, engine/cpu_memory.py).
    encoder_passes: str = "per_view"

    def validate(self) -> None:
        if self.encoder_passes not in ENCODER_PASSES:
            raise unknown("byol.encoder_passes", self.encoder_passes, ENCODER_PASSES)
        probs = {"hflip": (self.hflip,), "jitter": (self.jitter,), "grayscale": (self.grayscale,),
                 "blur": self.blur, "solarize": self.solarize}
        for name, ps in probs.items():
            if not all(0.0 <= p <= 1.0 for p in ps):
                raise ByonError(f"byol.{name} holds probabilities in [0, 1], got {ps}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ByonError(f"byol.crop_scale must satisfy 0 < min ≤ max ≤ 1, got {self.crop_scale}")
        if self.blur_sigma is not None and not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ByonError(f"byol.blur_sigma must satisfy 0 < min ≤ max, got {self.blur_sigma}")
        if not 0.0 <= self.ema_base <= self.ema_end <= 1.0:
            raise ByonError(f"byol.ema_base/ema_end must satisfy 0 ≤ ema_base ≤ ema_end ≤ 1, got "
                            f"{self.ema_base}, {self.ema_end}")


class BYOL(BootstrapTeacher):
    Config = BYOLConfig
    # BYOL's LARS (lr 0.2·B/256, wd 1.5e-6) is a ResNet recipe the engine does not offer; ViTs trained with a
    # BYOL-style momentum teacher use MoCo v3's AdamW recipe: lr 1.5e-4·B/256, betas (0.9, 0.999), wd 0.1.
    recipe = {"optim": {"blr": 1.5e-4, "betas": [0.9, 0.999], "weight_decay": 0.1}}
    default_feature = "cls"
    augment_batch = False

    def __init__(self, cfg: BYOLConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        self.encoder = ViTEncoder(shape)
        self.init_bootstrap(cfg.proj_hidden, cfg.proj_dim, cfg.ema_base, cfg.ema_end)
        self.blur_sigma = cfg.blur_sigma or (0.1 * shape.img_size / 224, 2.0 * shape.img_size / 224)

    # --- 1. two views ----------------------------------------------------------------------------
    def view(self, raw: Tensor, i: int, g: Draw) -> Tensor:
        """uint8 (B, C, H, W) → view i ∈ {0, 1}: BYOL's pipeline, normalised float (B, C, H, W)."""
        cfg = self.cfg
        v = random_resized_crop(raw.float() / 255, tuple(cfg.crop_scale), tuple(cfg.crop_ratio), g)
        v = hflip(v, cfg.hflip, g)
        if v.shape[1] == 3:
            v = color_jitter(v, p=cfg.jitter, generator=g)
            v = random_grayscale(v, cfg.grayscale, g)
        v = gaussian_blur(v, self.blur_sigma, cfg.blur[i], g)
        v = solarize(v, cfg.solarize[i], g)
        mean = torch.tensor(self.info.mean, device=v.device).view(-1, 1, 1)
        std = torch.tensor(self.info.std, device=v.device).view(-1, 1, 1)
        return (v - mean) / std

    def views(self, raw: Tensor, g: Draw) -> tuple[Tensor, Tensor]:
        return self.view(raw, 0, g), self.view(raw, 1, g)

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        v1, v2 = self.views(batch["raw"], ctx.generator)
        # the encoders (LayerNorm only) take the views one at a time or at once; the BN heads one at a time
        if self.cfg.encoder_passes == "joint":
            y1, y2 = self.encoder.forward_encoder(torch.cat([v1, v2]))[:, 0].chunk(2)
            z1, z2 = self.teacher(torch.cat([v1, v2]), 2)
        else:
            y1, y2 = (self.encoder.forward_encoder(v)[:, 0] for v in (v1, v2))
            (z1,), (z2,) = self.teacher(v1), self.teacher(v2)
        q1, q2 = self.projector(y1), self.projector(y2)
        p1, p2 = self.predictor(q1), self.predictor(q2)
        l12, cos12 = bootstrap_cosine(p1, z2)  # −mean cos; 2 − 2·cos = 2 + 2·l
        l21, cos21 = bootstrap_cosine(p2, z1)
        loss = (2 + 2 * l12) + (2 + 2 * l21)
        # collapse statistic (solo-learn): per-dimension std of the normalised online projections — 0 when
        # collapsed, ≈ 1/sqrt(proj_dim) when spread
        z_std = F.normalize(q1.detach().float(), dim=-1).std(dim=0, correction=0).mean()
        return {"loss": loss, "cos": torch.cat([cos12, cos21]).mean().detach(), "z_std": z_std}


__all__ = ["BYOL", "BYOLConfig"]
