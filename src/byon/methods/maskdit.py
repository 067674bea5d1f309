"""MaskDiT — Fast Training of Diffusion Models with Masked Transformers (Zheng et al., 2023; official code
Anima-Lab/MaskDiT, `train_utils/loss.py` EDMLoss and `models/maskdit.py`; spec/baselines.md).

EDM denoising (Karras et al. 2022) with half of the tokens dropped. Per image σ = exp(N(P_mean, P_std²));
the input is y + n, n ~ N(0, σ²); the denoiser is D(x) = c_skip·x + c_out·F(c_in·x, c_noise) with EDM's
preconditioning (`corruption.diffusion.edm_precondition`). F's encoder sees only the kept 50 % of the noisy
tokens; its decoder re-inserts mask tokens; both are adaLN-conditioned on c_noise = ln(σ)/4. Loss:
λ(σ)·‖D(x) − y‖² per token on the *kept* tokens (λ = (σ² + σ_d²)/(σ·σ_d)²) + 0.1 × MSE on the masked tokens
against the norm-pix of the noisy input (official code; `mae_target: clean` uses the clean patches). As in the
official code the MAE term reads D(x) — c_skip·x included — on the masked tokens.

EDM assumes data of std σ_data = 0.5; the dataset-normalised images here have unit std, so y = σ_data·image,
which keeps the σ distribution's meaning relative to the data.

The shared `ViTEncoder` is conditioned through `nn.cond.BlockModulation` (adaLN-Zero shift/scale/gate per
block, outside the encoder's timm state dict). For representation use the encoder is probed on clean, whole
images at a fixed small σ (`probe_sigma`): `features()` runs the conditioned encoder on c_in·y at that σ, and
`eval_encoder()` returns the same function folded into a plain timm ViT (`nn.cond.fold_modulation`), so
export, multi-block features and attention analyses see what the probe sees.

Sizes: MaskDiT-XL/2 has a 28-block × 1152 encoder and an 8-block × 512 decoder (16 heads); here the decoder is
2 adaLN blocks at the encoder width (as MAE's in this library), the encoder's heads; c_noise goes through a
256-d sinusoid + MLP to the encoder width (the decoder has its own MLP to its width). The decoder's final
Linear is zero-initialised as in the official code (DiT's init), so F ≡ 0 and D(x) = c_skip·x at the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from byon.corruption.diffusion import edm_precondition, edm_sigma, edm_weight
from byon.corruption.masking import TokenMask, check_ratio, masked_mean, random_masking
from byon.corruption.patches import masked_panels, norm_pix, patchify, unpatchify
from byon.data import DataInfo
from byon.draws import Draw, randn
from byon.errors import ByonError, unknown
from byon.losses import masked_mse, token_mse
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.cond import BlockModulation, TimestepEmbedder, fold_modulation, forward_modulated
from byon.nn.decoders import CondDecoder
from byon.nn.vit import EncoderShape, ViTEncoder

MAE_TARGETS = ("noisy", "clean")


@dataclass
class MaskDiTConfig:
    mask_ratio: float = 0.5
    p_mean: float = -1.2  # ln σ ~ N(p_mean, p_std²)
    p_std: float = 1.2
    sigma_data: float = 0.5
    mae_weight: float = 0.1  # the official mae_loss_coef
    mae_target: str = "noisy"  # noisy: norm-pix of y + n (official code) | clean: norm-pix of y
    probe_sigma: float = 0.05  # ln 0.05 ≈ −3.0, 1.5 std below p_mean: small but well inside training
    decoder_dim: int | None = None  # None: the encoder width (512 at DiT-XL scale; as MAE here)
    decoder_depth: int = 2  # 8 at DiT-XL scale
    decoder_heads: int | None = None  # None: the encoder's

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "maskdit.mask_ratio")
        if self.mae_target not in MAE_TARGETS:
            raise unknown("maskdit.mae_target", self.mae_target, MAE_TARGETS)
        for name in ("sigma_data", "probe_sigma"):
            if getattr(self, name) <= 0:
                raise ByonError(f"maskdit.{name} must be > 0, got {getattr(self, name)}")
        if self.p_std < 0:
            raise ByonError(f"maskdit.p_std must be ≥ 0, got {self.p_std}")


class MaskDiT(Method):
    Config = MaskDiTConfig
    # MaskDiT: AdamW (0.9, 0.999), no weight decay, constant lr 1e-4 at batch 1024 = 2.5e-5 · B / 256
    # (the engine's warm-up + cosine replaces the constant lr).
    recipe = {"optim": {"blr": 2.5e-5, "betas": [0.9, 0.999], "weight_decay": 0.0}}
    default_feature = "mean"  # MaskDiT's own feature is the mean of the encoder's patch tokens
    readout = ("probe_sigma",)  # settable at evaluation (`byon eval --set`)

    def __init__(self, cfg: MaskDiTConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        D = shape.embed_dim
        self.encoder = ViTEncoder(shape)
        self.t_embed = TimestepEmbedder(D)  # c_noise → the encoder's conditioning
        self.modulation = BlockModulation(D, shape.depth)
        self.decoder = CondDecoder(
            D, shape.num_patches, shape.patch_dim, dim=cfg.decoder_dim or D, depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads or shape.num_heads, mlp_ratio=shape.mlp_ratio, cond="adaln",
            mask_token=cfg.mask_ratio > 0)

    def precondition(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """σ (B,) → c_skip, c_out, c_in, c_noise, each (B,)."""
        return edm_precondition(sigma, self.cfg.sigma_data)

    def encode(self, images: Tensor, c_noise: Tensor, ids_keep: Tensor | None = None) -> Tensor:
        """Network-input images (B, C, H, W) (already c_in-scaled) → tokens (B, 1 + K, D) under adaLN(c_noise)."""
        tokens = self.encoder.embed(images, ids_keep=ids_keep)
        return forward_modulated(self.encoder, tokens, self.modulation, self.t_embed(c_noise))

    def denoise(self, images: Tensor, g: Draw, sigma: float | None = None
                ) -> tuple[Tensor, Tensor, Tensor, TokenMask, Tensor]:
        """Steps 1–3 on dataset-normalised images (B, C, H, W), at σ ~ exp(N(P_mean, P_std²)) per image (or the
        given σ) → (D(x) (B, N, P), y the clean and x the noisy patches (B, N, P) at EDM's scale, the mask, σ)."""
        cfg, p = self.cfg, self.shape.patch_size
        y = patchify(images, p) * cfg.sigma_data  # (B, N, P) clean data at EDM's scale
        B = y.shape[0]

        # 1. corrupt: σ per image, x = y + n; keep half of the tokens
        sigma = (edm_sigma(B, g, cfg.p_mean, cfg.p_std) if sigma is None else
                 torch.full((B,), sigma, device=y.device)).to(y.dtype)
        n = randn(g, *y.shape, device=y.device, dtype=y.dtype) * sigma[:, None, None]
        x = y + n
        m = random_masking(B, self.shape.num_patches, cfg.mask_ratio, g, y.device)
        c_skip, c_out, c_in, c_noise = (c[:, None, None] for c in self.precondition(sigma))

        # 2. encode the kept noisy tokens; 3. decode every token → F; D = c_skip·x + c_out·F
        masked = cfg.mask_ratio > 0  # mask_ratio 0: a plain DiT, every token in place
        latent = self.encode(unpatchify(c_in * x, p, self.shape.in_chans), c_noise.flatten(),
                             m.ids_keep if masked else None)
        F_x = self.decoder(latent, c_noise.flatten(), m.ids_restore if masked else None)  # (B, N, P)
        return c_skip * x + c_out * F_x, y, x, m, sigma

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        cfg = self.cfg
        D_x, y, x, m, sigma = self.denoise(batch["image"], ctx.generator)
        masked = cfg.mask_ratio > 0

        # 4-5. EDM-weighted denoising on the kept tokens + the MAE term on the masked ones
        weight = edm_weight(sigma, cfg.sigma_data)[:, None]  # (B, 1)
        loss = masked_mean(weight * token_mse(D_x, y), ~m.mask)
        logs = {"denoise": loss, "log_sigma_mean": sigma.log().mean()}
        if masked and cfg.mae_weight > 0:
            logs["mae"] = masked_mse(D_x, norm_pix(x if cfg.mae_target == "noisy" else y), m.mask)
            loss = loss + cfg.mae_weight * logs["mae"]
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures, each (B, C, H, W) normalised: input, corrupted (the kept tokens noised at σ = exp(P_mean),
        the median training σ, the masked ones grey), reconstruction = prediction (D(x) at every patch: the
        kept ones denoised, the masked ones predicted)."""
        D_x, _, x, m, _ = self.denoise(images, generator, sigma=math.exp(self.cfg.p_mean))
        s = self.cfg.sigma_data
        shown = (x / s).masked_fill(m.mask.unsqueeze(-1), 0)
        return masked_panels(images, D_x / s, m.mask, self.shape.patch_size, shown=shown,
                             pasted=torch.ones_like(m.mask))

    # --- representation: the encoder on clean whole images at σ = probe_sigma ------------------
    def _probe(self, device: torch.device) -> tuple[float, Tensor]:
        """(input scale c_in·σ_data, c_noise (1,)) at the probe σ."""
        _, _, c_in, c_noise = self.precondition(torch.tensor([self.cfg.probe_sigma], device=device))
        return float(c_in) * self.cfg.sigma_data, c_noise

    def features(self, images: Tensor) -> dict[str, Tensor]:
        scale, c_noise = self._probe(images.device)
        tokens = self.encode(images * scale, c_noise.expand(images.shape[0]))
        return {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(dim=1)}

    def eval_encoder(self) -> ViTEncoder:
        """A plain timm ViT equal to `features`' encoder (a fresh copy; the weights at call time)."""
        scale, c_noise = self._probe(self.encoder.cls_token.device)
        with torch.no_grad():
            c = self.t_embed(c_noise)
        return fold_modulation(self.encoder, self.modulation, c, input_scale=scale)


__all__ = ["MAE_TARGETS", "MaskDiT", "MaskDiTConfig"]
