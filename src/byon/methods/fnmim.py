"""Feature-noise MIM — "Improving Generative Pre-Training: An In-depth Study of Masked Image Modeling and
Denoising Models" (Choi et al., arXiv 2412.19104; papers/mim-denoising-study-2412.19104.txt; spec/baselines.md).
No official code: every unstated choice is a config key.

The study's three conditions, on a SimMIM-style encoder-only model:
  1. corruption and restoration inside the encoder: the tokens are split into masked (mask token), noised
     and clean ones, and a linear head on the encoder output predicts the clean pixels of the masked and of
     the noised tokens (two separately averaged terms);
  2. noise in feature space, after encoder block 2 by default: h ← h + σ·rms(h)·ε on the noised tokens
     (rms over the token's features, detached; σ ~ U(σ_min, σ_max) per image). `inject`: "pixel" noises
     the pixels of the noised patches before the patch embedding; 0 noises the patch + position embeddings
     entering block 1; k ≥ 1 the output of block k;
  3. disentanglement: the disruption loss (`losses.disruption`) on the attention between noised and masked
     tokens in every block after the injection point (all blocks for "pixel" and 0), with a weight.

Choices (the paper text gives no numbers): mask ratio 0.6 (SimMIM's), noised fraction 0.2 of all tokens
(drawn among the visible ones; 30 masked / 9 noised / 10 clean of 49), σ ∈ [0.1, 1.0], L1 loss on
dataset-normalised pixels as SimMIM, disruption weight 0.1. At vit-micro (depth 6) `inject: 6` noises the
final features, so no attention follows it and its disruption term is 0.
Sizes: the head is one Linear(D → p²C), plus the (1, 1, D) mask token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byon.corruption.masking import check_ratio, random_masking
from byon.corruption.patches import masked_panels, patchify, unpatchify
from byon.data import DataInfo
from byon.draws import Draw, rand, randn
from byon.errors import ByonError, unknown
from byon.losses import disruption_loss, masked_l1, masked_mse
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.vit import EncoderShape, ViTEncoder

LOSSES = {"l1": masked_l1, "mse": masked_mse}


@dataclass
class FNMIMConfig:
    mask_ratio: float = 0.6
    noise_ratio: float = 0.2  # fraction of all tokens noised, taken from the visible ones
    inject: int | str = 2  # "pixel" | k ≥ 0: after k encoder blocks (0: on the embeddings)
    sigma: tuple[float, float] = (0.1, 1.0)  # σ ~ U(σ_min, σ_max) per image, relative to rms(h)
    loss: str = "l1"  # l1 (SimMIM) | mse
    noise_weight: float = 1.0  # weight of the noised tokens' reconstruction term
    disruption_weight: float = 0.1  # 0: no disruption loss (its attention is then not materialised)

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "fnmim.mask_ratio")
        check_ratio(self.noise_ratio, "fnmim.noise_ratio")
        if self.mask_ratio + self.noise_ratio > 1:
            raise ByonError(f"fnmim.mask_ratio + fnmim.noise_ratio must be ≤ 1, got {self.mask_ratio} + "
                            f"{self.noise_ratio}; lower one of them")
        if isinstance(self.inject, str) and self.inject != "pixel":
            raise ByonError(f"fnmim.inject must be 'pixel' or a block number ≥ 0, got '{self.inject}'")
        if isinstance(self.inject, int) and self.inject < 0:
            raise ByonError(f"fnmim.inject must be 'pixel' or a block number ≥ 0, got {self.inject}")
        lo, hi = self.sigma
        if not 0 <= lo <= hi:
            raise ByonError(f"fnmim.sigma must be [min, max] with 0 ≤ min ≤ max, got {list(self.sigma)}")
        if self.loss not in LOSSES:
            raise unknown("fnmim.loss", self.loss, LOSSES)
        for name in ("noise_weight", "disruption_weight"):
            if getattr(self, name) < 0:
                raise ByonError(f"fnmim.{name} must be ≥ 0, got {getattr(self, name)}")


def feature_noise(h: Tensor, tokens: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
    """h ← h + σ·rms(h)·ε on the selected tokens. h, eps: (B, L, D); tokens: (B, L) bool; sigma: (B,).
    rms over each token's D values, detached (the noise scale is not a path for gradients)."""
    rms = h.detach().float().pow(2).mean(dim=-1, keepdim=True).sqrt().to(h.dtype)
    scale = sigma[:, None, None].to(h.dtype) * tokens.unsqueeze(-1).to(h.dtype)
    return h + scale * rms * eps


class FeatureNoiseMIM(Method):
    Config = FNMIMConfig
    # No published recipe; the SimMIM one it builds on: AdamW (0.9, 0.999), wd 0.05, lr = 1e-4 · B / 512, clip 5.
    recipe = {"optim": {"blr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 0.05, "grad_clip": 5.0}}
    default_feature = "mean"

    def __init__(self, cfg: FNMIMConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        if cfg.inject != "pixel" and cfg.inject > shape.depth:
            raise ByonError(f"fnmim.inject={cfg.inject} but the encoder has {shape.depth} blocks; choose 'pixel' "
                            f"or 0..{shape.depth}")
        self.cfg, self.shape, self.info = cfg, shape, info
        self.num_noised = int(shape.num_patches * cfg.noise_ratio)
        self.encoder = ViTEncoder(shape)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, shape.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        self.head = nn.Linear(shape.embed_dim, shape.patch_dim)
        # the blocks that run after the injection point: the disruption loss reads their attention
        self.after = list(range(0 if cfg.inject == "pixel" else cfg.inject, shape.depth))

    def corrupt(self, B: int, g: Draw, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """→ masked (B, N) bool, noised (B, N) bool (disjoint), σ (B,)."""
        m = random_masking(B, self.shape.num_patches, self.cfg.mask_ratio, g, device)
        noised = torch.zeros_like(m.mask).scatter(1, m.ids_keep[:, :self.num_noised], True)  # ids_keep is shuffled
        lo, hi = self.cfg.sigma
        sigma = lo + (hi - lo) * rand(g, B, device=device)
        return m.mask, noised, sigma

    def predict(self, images: Tensor, g: Draw) -> dict[str, Tensor | list[Tensor]]:
        """Steps 1–3 on dataset-normalised images (B, C, H, W) → {"pred": (B, N, P) every patch's pixels,
        "masked", "noised": (B, N) bool, "sigma": (B,), "seq": (masked, noised) over the encoder's (B, 1 + N)
        sequence, "attn": the attention of the blocks after the injection (empty without the disruption loss),
        "shown": (B, N, P) the patches as the encoder received them (pixel-noised with inject "pixel")}."""
        cfg, B, p = self.cfg, images.shape[0], self.shape.patch_size
        x = patchify(images, p)  # (B, N, P)

        # 1. corrupt: masked / noised / clean tokens; the noise is drawn where it will be injected
        masked, noised, sigma = self.corrupt(B, g, images.device)
        cls_slot = masked.new_zeros(B, 1)  # the token groups over the encoder's sequence (B, 1 + N)
        noised_seq, masked_seq = torch.cat([cls_slot, noised], dim=1), torch.cat([cls_slot, masked], dim=1)
        hooks, shown = {}, x
        if cfg.inject == "pixel":
            eps = randn(g, *x.shape, device=x.device, dtype=x.dtype)
            shown = feature_noise(x, noised, sigma, eps)
            tokens = self.encoder.embed(unpatchify(shown, p, self.shape.in_chans), mask=masked,
                                        mask_token=self.mask_token)
        else:
            tokens = self.encoder.embed(images, mask=masked, mask_token=self.mask_token)  # (B, 1 + N, D)
            eps = randn(g, *tokens.shape, device=x.device, dtype=tokens.dtype)
            if cfg.inject == 0:
                tokens = feature_noise(tokens, noised_seq, sigma, eps)
            else:
                hooks[cfg.inject - 1] = lambda h: feature_noise(h, noised_seq, sigma, eps)

        # 2. encode (materialising the attention of the blocks after the injection when it is needed)
        read_attn = self.after if cfg.disruption_weight > 0 else []
        out, _, attn = self.encoder.forward_tokens(tokens, hooks=hooks, return_attn=read_attn)

        # 3. predict the pixels of every patch
        return {"pred": self.head(out[:, 1:]), "masked": masked, "noised": noised, "sigma": sigma,
                "seq": [masked_seq, noised_seq], "attn": [attn[i] for i in read_attn], "shown": shown}

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        cfg, images = self.cfg, batch["image"]  # (B, C, H, W), dataset-normalised
        o = self.predict(images, ctx.generator)
        pred, masked, noised = o["pred"], o["masked"], o["noised"]

        # 4. targets: the clean dataset-normalised pixels; 5. losses: de-masking + de-noising (separate
        # averages) + disruption
        x = patchify(images, self.shape.patch_size)
        recon = LOSSES[cfg.loss]
        logs = {"demask": recon(pred, x, masked), "denoise": recon(pred, x, noised)}
        loss = logs["demask"] + cfg.noise_weight * logs["denoise"]
        if o["attn"]:
            masked_seq, noised_seq = o["seq"]
            logs["disruption"] = disruption_loss(o["attn"], noised_seq, masked_seq)
            loss = loss + cfg.disruption_weight * logs["disruption"]
        logs["sigma_mean"] = o["sigma"].mean()
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures, each (B, C, H, W) normalised: input, corrupted (masked patches grey; the noised ones
        carry their noise only with inject "pixel" — feature noise is not visible in pixels), reconstruction
        (predictions at the masked and noised patches, the clean ones pasted), prediction (every patch)."""
        o = self.predict(images, generator)
        shown = o["shown"].masked_fill(o["masked"].unsqueeze(-1), 0)
        return masked_panels(images, o["pred"], o["masked"], self.shape.patch_size, shown=shown,
                             pasted=o["masked"] | o["noised"])

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}


__all__ = ["FNMIMConfig", "FeatureNoiseMIM", "feature_noise"]
