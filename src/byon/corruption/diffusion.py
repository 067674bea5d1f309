"""Diffusion noise: the DDPM forward process (Ho et al. 2020) and EDM's σ-parameterisation (Karras et al.
2022). Shared by BYON, DiffMAE, MaskDiT, l-DAE and DDAE. Every random draw takes an explicit generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from byon.draws import Draw, randint, randn
from byon.errors import ByonError, unknown

SCHEDULES = ("linear", "cosine")


def _per_image(coef: Tensor, like: Tensor) -> Tensor:
    """(B,) → (B, 1, …, 1) broadcasting against `like` (B, …)."""
    return coef.reshape(coef.shape[0], *([1] * (like.dim() - 1))).to(like.dtype)


def _cosine_betas(num_timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021: ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), β_t = 1 − ᾱ_t/ᾱ_{t−1} ≤ 0.999."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


class DDPMSchedule(nn.Module):
    """q(x_t | x_0) = N(sqrt(ᾱ_t)·x_0, (1 − ᾱ_t)·I), t ∈ {0, …, T−1}.

    linear: β_t evenly spaced from `beta_start` to `beta_end·beta_scale` (BYON appendix C lowers the
    betas: beta_scale 0.5); cosine: Nichol–Dhariwal betas, times `beta_scale`.
    Buffers (derived from the arguments, so not saved in checkpoints): betas, alphas_cumprod,
    sqrt_ab = sqrt(ᾱ_t), sqrt_1mab = sqrt(1 − ᾱ_t), all (T,).
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_scale: float = 1.0, kind: str = "linear") -> None:
        super().__init__()
        if kind not in SCHEDULES:
            raise unknown("noise schedule", kind, SCHEDULES)
        if num_timesteps < 1:
            raise ByonError(f"num_timesteps must be ≥ 1, got {num_timesteps}")
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end * beta_scale, num_timesteps, dtype=torch.float64)
        else:
            betas = _cosine_betas(num_timesteps) * beta_scale
        if not (betas.min() > 0 and betas.max() < 1):
            raise ByonError(f"betas must lie in (0, 1), got [{betas.min():.3g}, {betas.max():.3g}]; "
                            f"check beta_start/beta_end/beta_scale")
        ab = torch.cumprod(1 - betas, dim=0)
        self.num_timesteps = num_timesteps
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", ab.float(), persistent=False)
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1mab", (1 - ab).sqrt().float(), persistent=False)

    def sample_t(self, batch: int, generator: Draw) -> Tensor:
        """Uniform integer timesteps (B,) on the generator's device."""
        return randint(generator, 0, self.num_timesteps, batch)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, eta: Tensor | None = None) -> Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·η·ε. x0, noise: (B, …); t: (B,) long; eta: (B,) or None (=1)."""
        noise = noise if eta is None else _per_image(eta, noise) * noise
        return _per_image(self.sqrt_ab[t], x0) * x0 + _per_image(self.sqrt_1mab[t], x0) * noise

    def predict_x0(self, x_t: Tensor, t: Tensor, eps_hat: Tensor, eta: Tensor | None = None) -> Tensor:
        """Invert q_sample for a predicted ε̂: x̂0 = (x_t − sqrt(1 − ᾱ_t)·η·ε̂) / sqrt(ᾱ_t)."""
        eps_hat = eps_hat if eta is None else _per_image(eta, eps_hat) * eps_hat
        return (x_t - _per_image(self.sqrt_1mab[t], x_t) * eps_hat) / _per_image(self.sqrt_ab[t], x_t)


# --- EDM (Karras et al. 2022), as MaskDiT and N-JEPA use it ---------------------------------------------


def edm_sigma(batch: int, generator: Draw, p_mean: float = -1.2, p_std: float = 1.2,
              per_sample: int | None = None) -> Tensor:
    """Training noise levels σ = exp(N(p_mean, p_std²)), (B,) — or (B, per_sample) — on the generator's device."""
    n = randn(generator, batch, *(() if per_sample is None else (per_sample,)))
    return (n * p_std + p_mean).exp()


def edm_precondition(sigma: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM table 1: D(x) = c_skip·x + c_out·F(c_in·x, c_noise).

    c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/sqrt(σ² + σ_d²), c_in = 1/sqrt(σ² + σ_d²), c_noise = ln(σ)/4.
    """
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)², which makes the effective target unit-variance."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


__all__ = ["SCHEDULES", "DDPMSchedule", "edm_precondition", "edm_sigma", "edm_weight"]
