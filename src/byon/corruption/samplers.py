"""Samplers that turn a trained denoiser back into images: DDIM for DDPM ε-models (Song et al. 2021) and EDM's
Heun / Euler ODE solver on σ (Karras et al. 2022, algorithm 1 with S_churn = 0). Every draw takes the
generator, so a seed gives the same images."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from byon.corruption.diffusion import DDPMSchedule
from byon.errors import ByonError

EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, …), t (B,) long) → ε̂ (B, …)
DenoiseFn = Callable[[Tensor, Tensor], Tensor]  # (x (B, …), σ (B,)) → D(x; σ) (B, …)


def _check_steps(steps: int, most: int | None = None) -> None:
    if steps < 1 or (most is not None and steps > most):
        raise ByonError(f"the sampler needs 1 ≤ steps{f' ≤ {most}' if most else ''}, got {steps}")


def ddim_timesteps(num_timesteps: int, steps: int) -> Tensor:
    """`steps` evenly spaced timesteps from T − 1 down to 0, (steps,) long, strictly decreasing."""
    _check_steps(steps, num_timesteps)
    return torch.linspace(num_timesteps - 1, 0, steps).round().long()


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, schedule: DDPMSchedule, shape: tuple[int, ...], steps: int,
                generator: torch.Generator, eta: float = 0.0,
                clip: tuple[Tensor | float, Tensor | float] | None = None) -> Tensor:
    """x_T ~ N(0, I) → x_0 of `shape` (B, …) in `steps` DDIM steps (eta = 0: deterministic given x_T).

    Each step predicts x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t, optionally clipped to the data range `clip` = (lo, hi)
    (ε̂ then re-derived from it, as the DDPM/DDAE code does), and moves to the next timestep:
    x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − c²)·ε̂ + c·z, c = eta·√((1 − ᾱ_t/ᾱ_prev)(1 − ᾱ_prev)/(1 − ᾱ_t)).
    The step after t = 0 has ᾱ_prev = 1, so the result is the last x̂_0.
    """
    device = generator.device
    ab = schedule.alphas_cumprod.to(device)
    ts = ddim_timesteps(schedule.num_timesteps, steps).to(device)
    x = torch.randn(shape, generator=generator, device=device)
    for i, t in enumerate(ts):
        a = ab[t]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a)
        eps = eps_fn(x, t.expand(shape[0])).float()
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if clip is not None:
            x0 = torch.maximum(torch.minimum(x0, torch.as_tensor(clip[1], device=device)),
                               torch.as_tensor(clip[0], device=device))
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        c = eta * ((1 - a / a_prev) * (1 - a_prev) / (1 - a)).clamp_min(0).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - c**2).clamp_min(0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + c * torch.randn(shape, generator=generator, device=device)
    return x


def edm_sigma_steps(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                    device: torch.device | str = "cpu") -> Tensor:
    """EDM eq. 5: σ_i = (σ_max^(1/ρ) + i/(n − 1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i = 0 … n − 1, then σ_n = 0.
    (steps + 1,) float64, from σ_max down to 0."""
    _check_steps(steps)
    if not 0 < sigma_min < sigma_max:
        raise ByonError(f"EDM needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(steps, dtype=torch.float64, device=device)
    frac = i / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


@torch.no_grad()
def heun_sample(denoise_fn: DenoiseFn, shape: tuple[int, ...], steps: int, generator: torch.Generator,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                second_order: bool = True) -> Tensor:
    """x ~ N(0, σ_max²·I) → x_0 along the probability-flow ODE dx/dσ = (x − D(x; σ))/σ over `edm_sigma_steps`.
    second_order: Heun's correction on every step but the last (2·steps − 1 evaluations); false: Euler steps,
    which on this ODE are exactly DDIM's (EDM §3)."""
    device = generator.device
    sig = edm_sigma_steps(steps, sigma_min, sigma_max, rho, device)
    x = torch.randn(shape, generator=generator, device=device, dtype=torch.float64) * sig[0]
    B = shape[0]
    for s, s_next in zip(sig[:-1], sig[1:]):
        d = (x - denoise_fn(x.float(), s.float().expand(B)).double()) / s
        x_next = x + (s_next - s) * d
        if second_order and s_next > 0:
            d2 = (x_next - denoise_fn(x_next.float(), s_next.float().expand(B)).double()) / s_next
            x_next = x + (s_next - s) * (d + d2) / 2
        x = x_next
    return x.float()


__all__ = ["ddim_sample", "ddim_timesteps", "edm_sigma_steps", "heun_sample"]
