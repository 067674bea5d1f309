"""l-DAE — Deconstructing Denoising Diffusion Models for Self-Supervised Learning (Chen, Liu, Xie, He 2024;
papers/l-dae.txt, spec/baselines.md).

The latent Denoising Autoencoder (figure 1, the last row of Tab. 3): project each patch of the clean image onto
a patch-wise PCA basis (`corruption.pca.PatchPCA`, fitted once on training patches), add Gaussian noise to
the d kept latent coordinates — z_t = V_d·(x − μ) + σ·ε, no input scaling (γ_t ≡ 1), σ ~ U[0, √2] — and
project back to pixels by inverse PCA (the PCA residual is *not* given to the network). A symmetric ViT
encoder–decoder conditioned on t (`nn.denoiser.CondViT`) predicts the original clean image; the loss is
λ_t·Σ_i w_i·r_i² with r = V·(x − x̂) over the full basis, w_i = 1 for the d kept components and 0.1 for the
residual, λ_t = 1/(1 + σ²) (eq. 4). The encoder half, on clean images at a fixed small t, is the product.

Switches (the deconstruction's steps): `prediction` clean | noise (the latent noise, in image space, eq. 2
with λ = 1), `noise_space` latent | pixel (the identity tokenizer: a classical pixel-noise DAE, Fig. 5),
`multi_level` (false: the single level σ = √(1/3)), `latent_dim`.

t is σ on DiT's 1000-step scale, t = 1000·σ/σ_max (the schedule is linear: σ_t = σ_max·t/1000); the
probe's t = 10 (appendix A) is σ ≈ 0.014. Pixels are the dataset-normalised ones (unit std per channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from byon.corruption.patches import patchify, unpatchify
from byon.corruption.pca import PatchPCA, default_latent_dim
from byon.data import DataInfo
from byon.data.imagedata import ImageData
from byon.draws import Draw, draw_device, rand, randn
from byon.errors import ByonError, unknown
from byon.losses.pca_weighted import component_weights, pca_weighted_mse
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.denoiser import SPLITS, CondViT
from byon.nn.vit import EncoderShape, ViTEncoder

NOISE_SPACES = ("latent", "pixel")
PREDICTIONS = ("clean", "noise")


@dataclass
class LDAEConfig:
    # d per patch. None: 2^round(log2 √(p²C)) — 32 for 16×16×3 (the paper's best PCA entry, Tab. 2: 65.1 at
    # d = 32 of 768) and 4 for Fashion-MNIST's 4×4×1 (d = 4 keeps 92 % of its patch variance, about what
    # 32 of 768 components keep of natural-image patches; 8 would keep 97 % and leave the noise little to hide)
    latent_dim: int | None = None
    noise_space: str = "latent"  # latent: PCA tokenizer | pixel: identity tokenizer (d = p²C, pixel noise)
    prediction: str = "clean"  # clean: the original image (Tab. 3 last row) | noise: the latent noise
    multi_level: bool = True  # true: σ ~ U[0, sigma_max] | false: σ = sigma_single (§4.3 "single noise level")
    sigma_max: float = math.sqrt(2)
    sigma_single: float = math.sqrt(1 / 3)
    residual_weight: float = 0.1  # w_i of the components beyond d
    # fixed t (of 1000) for the encoder on clean input. None: 10 (appendix A) with multi-level noise; with a single
    # level the t it trains at (timestep(sigma_single) ≈ 408) — the conditioning never sees another t there
    probe_t: float | None = None
    pca_images: int = 10_000  # training images the basis is fitted on (all their patches)
    split: str = "dit"  # dit: one DiT, its first blocks the encoder (appendix A) | mae: an MAE-style interface
    decoder_depth: int | None = None  # None: the encoder's (symmetric; appendix A: best at equal depths)
    decoder_dim: int | None = None  # None: the encoder width (split mae only)
    decoder_heads: int | None = None  # None: the encoder's

    def validate(self) -> None:
        if self.noise_space not in NOISE_SPACES:
            raise unknown("ldae.noise_space", self.noise_space, NOISE_SPACES)
        if self.prediction not in PREDICTIONS:
            raise unknown("ldae.prediction", self.prediction, PREDICTIONS)
        if self.split not in SPLITS:
            raise unknown("ldae.split", self.split, SPLITS)
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ByonError(f"ldae.latent_dim must be ≥ 1 (or none for the default), got {self.latent_dim}")
        if self.sigma_max <= 0 or self.sigma_single < 0:
            raise ByonError(f"ldae.sigma_max must be > 0 and sigma_single ≥ 0, got {self.sigma_max}, "
                            f"{self.sigma_single}")
        if self.residual_weight < 0 or self.pca_images < 1:
            raise ByonError(f"ldae.residual_weight must be ≥ 0 and pca_images ≥ 1, got {self.residual_weight}, "
                            f"{self.pca_images}")


class LDAE(Method):
    Config = LDAEConfig
    # l-DAE appendix A (DiT's recipe): AdamW, lr = 1e-4 · B / 256, no weight decay, warm-up then cosine; DiT's
    # betas (0.9, 0.999). The warm-up is the engine's (the protocol's 1 epoch); the paper's ratio, 100 of 400
    # epochs, is optim.warmup_epochs = epochs / 4 (2 of 8), an override outside the protocol.
    recipe = {"optim": {"blr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0}}
    default_feature = "mean"  # appendix A: the encoder's output, globally average-pooled
    readout = ("probe_t",)  # settable at evaluation (`byon eval --set`)

    def __init__(self, cfg: LDAEConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        P = shape.patch_dim
        pixel = cfg.noise_space == "pixel"
        self.latent_dim = P if pixel else cfg.latent_dim or default_latent_dim(P)
        if self.latent_dim > P:
            raise ByonError(f"ldae.latent_dim {self.latent_dim} exceeds the patch dimension {P} "
                            f"({shape.patch_size}×{shape.patch_size}×{shape.in_chans}); choose d ≤ {P}")
        self.pca = PatchPCA(P, identity=pixel)
        self.register_buffer("weights", component_weights(P, self.latent_dim, cfg.residual_weight), persistent=False)
        self.net = CondViT(shape, cfg.decoder_depth, cfg.decoder_dim, cfg.decoder_heads, cfg.split)
        self.encoder = self.net.encoder
        self.probe_t = cfg.probe_t if cfg.probe_t is not None else (
            10.0 if cfg.multi_level else float(self.timestep(torch.tensor(cfg.sigma_single))))

    # --- the data hook: the PCA basis, fitted once before training -------------------------------
    def setup_data(self, data: ImageData) -> None:
        if self.cfg.noise_space == "latent":
            self.pca.fit_images(data.images, self.info.mean, self.info.std, self.shape.patch_size,
                                max_images=self.cfg.pca_images)

    # --- 1. corrupt ------------------------------------------------------------------------------
    def sample_sigma(self, B: int, g: Draw) -> Tensor:
        if not self.cfg.multi_level:
            return torch.full((B,), self.cfg.sigma_single, device=draw_device(g))
        return rand(g, B) * self.cfg.sigma_max

    def timestep(self, sigma: Tensor) -> Tensor:
        """σ → t on the 1000-step scale the conditioning was designed for."""
        return sigma * (1000.0 / self.cfg.sigma_max)

    def corrupt(self, x: Tensor, sigma: Tensor, g: Draw) -> tuple[Tensor, Tensor]:
        """Clean patches x (B, N, P), σ (B,) → (network input x_t = μ + V_dᵀ(z_d + σ·ε) (B, N, P),
        the noise it carries in image space V_dᵀ·ε (B, N, P))."""
        d = self.latent_dim
        z = self.pca.encode(x)[..., :d]  # (B, N, d)
        eps = randn(g, *z.shape, device=z.device, dtype=z.dtype)
        x_t = self.pca.decode(z + sigma[:, None, None].to(z.dtype) * eps)
        return x_t, self.pca.decode(eps) - self.pca.mean

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        images, g, p = batch["image"], ctx.generator, self.shape.patch_size
        x = patchify(images, p)  # (B, N, P)
        sigma = self.sample_sigma(x.shape[0], g).to(x.dtype)

        # 1. corrupt: noise in the PCA latent, back to pixels by inverse PCA
        x_t, noise = self.corrupt(x, sigma, g)
        # 2–3. encode + decode, both conditioned on t
        pred = self.net(unpatchify(x_t, p, self.shape.in_chans), self.timestep(sigma))  # (B, N, P)
        # 4. target: the original image (its PCA residual included), or the noise
        clean = self.cfg.prediction == "clean"
        target = x if clean else noise
        # 5. loss: per-component weights in the full PCA basis; λ_t = 1/(1 + σ²) for clean prediction
        lam = 1 / (1 + sigma**2) if clean else None
        loss = pca_weighted_mse(pred, target, self.pca.components, self.weights, lam)
        with torch.no_grad():
            r = (target - pred.detach()) @ self.pca.components.T
            d = self.latent_dim
            logs = {"kept_mse": r[..., :d].pow(2).mean(), "sigma_mean": sigma.mean()}
            if d < r.shape[-1]:
                logs["residual_mse"] = r[..., d:].pow(2).mean()
        return {"loss": loss, **logs}

    # --- analysis: l-DAE figure 8 ----------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """images (B, C, H, W) normalised → panels, same space: input; corrupted = the latent-noised network
        input at σ = sigma_single (√(1/3), figure 7's level); reconstruction = the denoised output; pca = the
        clean image through the tokenizer alone (σ = 0)."""
        p, C = self.shape.patch_size, self.shape.in_chans
        x = patchify(images, p)
        sigma = torch.full((x.shape[0],), self.cfg.sigma_single, device=x.device, dtype=x.dtype)
        x_t, _ = self.corrupt(x, sigma, generator)
        out = self.net(unpatchify(x_t, p, C), self.timestep(sigma))
        x_hat = out if self.cfg.prediction == "clean" else x_t - sigma[:, None, None] * out
        to_img = lambda v: unpatchify(v, p, C)  # noqa: E731
        return {"input": images, "corrupted": to_img(x_t), "reconstruction": to_img(x_hat),
                "pca": to_img(self.pca.project(x, self.latent_dim))}

    # --- representation: the encoder half, clean input, fixed small t ------------------------------
    def features(self, images: Tensor) -> dict[str, Tensor]:
        tokens = self.net.encode(images, torch.tensor(self.probe_t, device=images.device))
        return {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(dim=1)}

    def eval_encoder(self) -> ViTEncoder:
        """A plain timm ViT equal to `features`' encoder at t = probe_t (a fresh copy)."""
        return self.net.folded_encoder(self.probe_t)

    def resolved(self) -> dict[str, Any]:
        """What the None defaults became: the latent dimension d and the probe t."""
        return {"latent_dim": self.latent_dim, "probe_t": self.probe_t}

    def run_files(self) -> dict[str, Any]:
        """ldae_pca.json: the latent dimension and the variance the kept components explain."""
        explained = self.pca.explained().tolist()
        return {"ldae_pca.json": {
            "latent_dim": self.latent_dim, "patch_dim": self.shape.patch_dim, "noise_space": self.cfg.noise_space,
            "probe_t": self.probe_t, "explained_variance_kept": explained[self.latent_dim - 1],
            "eigenvalues": [round(v, 6) for v in self.pca.variance.tolist()]}}


__all__ = ["NOISE_SPACES", "PREDICTIONS", "LDAE", "LDAEConfig"]
