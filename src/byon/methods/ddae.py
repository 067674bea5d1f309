"""DDAE — Denoising Diffusion Autoencoders are Unified Self-supervised Learners (Xiang et al., ICCV 2023;
papers/ddae.txt, official code FutureXiang/ddae; spec/baselines.md).

Plain unconditional diffusion pretraining of a ViT denoiser (DiT-style adaLN on t, `nn.denoiser.CondViT`):
  ddpm: ε-prediction, x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, linear β 1e-4 → 0.02, T = 1000, loss ‖ε̂ − ε‖² (eq. 2's
        re-weighting); sampled with DDIM;
  edm:  D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise), σ = exp(N(−1.2, 1.2²)), λ(σ)-weighted ‖D − x_0‖²;
        sampled with EDM's Heun solver.
EMA weights are kept (the engine's `ema_pairs` hook) and every representation read-out uses them. The decay
warms up as in DDAE's ema_pytorch.EMA(beta, update_after_step=0, update_every=1): update k = 0, 1, … uses
min(ema_decay, 1 − (1 + k)^(−2/3)), so update 0 copies the online network and the random init leaves no trace.

Representations (§3.2): the network's intermediate activations, global-average-pooled, on the image noised
at a small fixed timestep with fresh noise per call — `layer_features(images, t, generator)` gives every
block's, the probe grid (`byon eval probe-grid`, figure 2) picks the best (block, t), and `ddae.feature_block`
/ `ddae.feature_t` fix the one that kNN / linear evaluation use. `eval_encoder()` is the network truncated
after that block at the fixed t on clean input, as a plain timm ViT (DDAE fine-tunes it so).

Timesteps are DDPM's for both objectives (0 … T − 1 here; the DDAE code's t = 11 of 1 … T is 10 here); under
EDM a timestep t stands for σ(t) = √((1 − ᾱ_t)/ᾱ_t), the same noise-to-signal ratio (t = 10: σ ≈ 0.047).
Both objectives get x_0 = sigma_data · the dataset-normalised image: zero mean and std sigma_data = 0.5 per
channel. That is EDM's σ_data exactly. DDPM's data are the [−1, 1] pixels, which have no fixed mean or std
(std ≈ 0.5 on CIFAR-10, ≈ 0.7 on Fashion-MNIST); 0.5 is kept as their natural-image scale, so every timestep
gives about the signal-to-noise ratio the linear β schedule and the probe t were tuned at, whatever the dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from byon.corruption.diffusion import DDPMSchedule, edm_precondition, edm_sigma, edm_weight
from byon.corruption.patches import patchify, unpatchify
from byon.corruption.samplers import ddim_sample, heun_sample
from byon.data import DataInfo
from byon.draws import randn
from byon.errors import ByonError, unknown
from byon.losses import token_mse
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.denoiser import SPLITS, CondViT
from byon.nn.ema import make_target
from byon.nn.vit import EncoderShape, ViTEncoder

OBJECTIVES = ("ddpm", "edm")
SAMPLERS = ("ddim", "heun")


@dataclass
class DDAEConfig:
    objective: str = "ddpm"  # ddpm: ε-prediction, linear β | edm: EDM preconditioning and loss weight
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    p_mean: float = -1.2  # EDM: ln σ ~ N(p_mean, p_std²)
    p_std: float = 1.2
    sigma_data: float = 0.5  # x_0 = sigma_data · normalised image
    # β, the cap of the warm-up decay min(β, 1 − (1 + k)^(−2/3)); DDAE: 0.9999 (DDPM) / 0.9993 (EDM). The
    # warm-up reaches 0.9999 only after 10⁶ updates: at fmnist-cpu's 1,872 steps it ends at ≈ 0.9934.
    ema_decay: float = 0.9999
    feature_block: int | None = None  # 1-based block of encoder + decoder; None: the encoder's last (the middle)
    feature_t: int = 10  # DDPM timestep of the probe noise (DDAE's DDPM probe, t = 11 of 1 … T)
    feature_noise: bool = True  # features(): noise the input at feature_t (DDAE's linear probe) | clean input
    split: str = "dit"  # dit: one DiT whose blocks are counted on across the halves | mae: an MAE-style interface
    decoder_depth: int | None = None  # None: the encoder's (a DiT split in two equal halves)
    decoder_dim: int | None = None  # None: the encoder width (split mae only)
    decoder_heads: int | None = None  # None: the encoder's

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise unknown("ddae.objective", self.objective, OBJECTIVES)
        if self.split not in SPLITS:
            raise unknown("ddae.split", self.split, SPLITS)
        if not 0 <= self.feature_t < self.num_timesteps:
            raise ByonError(f"ddae.feature_t must lie in 0…{self.num_timesteps - 1}, got {self.feature_t}")
        if self.feature_block is not None and self.feature_block < 1:
            raise ByonError(f"ddae.feature_block counts blocks from 1, got {self.feature_block}")
        if not 0 <= self.ema_decay < 1:
            raise ByonError(f"ddae.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.sigma_data <= 0 or self.p_std < 0:
            raise ByonError(f"ddae.sigma_data must be > 0 and p_std ≥ 0, got {self.sigma_data}, {self.p_std}")


class DDAE(Method):
    Config = DDAEConfig
    # DDAE's DDPM recipe (config/DDPM_ddpm.yaml, train.py): Adam, lr 1e-4 per 128 images (scaled with the
    # GPUs) = 2e-4 · B / 256, no weight decay, grad-norm clip 1.0, warm-up then constant (here: cosine).
    # EDM (config/EDM_ddpmpp.yaml): lr 1e-4 per 64 images = 4e-4 · B / 256 — set optim.blr for objective: edm.
    recipe = {"optim": {"blr": 2e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "grad_clip": 1.0}}
    default_feature = "mean"  # §3.2: global average pooling
    readout = ("feature_block", "feature_t", "feature_noise")  # settable at evaluation (`byon eval --set`)

    def __init__(self, cfg: DDAEConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        self.diffusion = DDPMSchedule(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
        self.net = CondViT(shape, cfg.decoder_depth, cfg.decoder_dim, cfg.decoder_heads, cfg.split)
        self.ema = make_target(self.net)
        self.encoder = self.net.encoder
        self.feature_block = cfg.feature_block or self.net.encoder_depth
        if self.feature_block > self.net.depth:
            raise ByonError(f"ddae.feature_block {self.feature_block} does not exist; the network has blocks "
                            f"1…{self.net.depth}")
        self._feature_calls = 0

    @property
    def num_layers(self) -> int:
        return self.net.depth

    # --- noise levels ----------------------------------------------------------------------------
    def sigma_of_t(self, t: Tensor) -> Tensor:
        """DDPM timesteps (B,) → the VE noise level of the same signal-to-noise ratio, √((1 − ᾱ_t)/ᾱ_t)."""
        return self.diffusion.sqrt_1mab[t] / self.diffusion.sqrt_ab[t]

    def _edm(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return edm_precondition(sigma, self.cfg.sigma_data)

    # --- the denoiser, in image space ------------------------------------------------------------
    def eps_model(self, net: CondViT, x_t: Tensor, t: Tensor) -> Tensor:
        """DDPM: x_t (B, C, H, W), t (B,) long → ε̂ (B, C, H, W)."""
        return unpatchify(net(x_t, t), self.shape.patch_size, self.shape.in_chans)

    def denoiser(self, net: CondViT, x: Tensor, sigma: Tensor) -> Tensor:
        """EDM: x = x_0 + σ·n (B, C, H, W), σ (B,) → D(x; σ) (B, C, H, W)."""
        c_skip, c_out, c_in, c_noise = (c.to(x.dtype) for c in self._edm(sigma))
        F_x = unpatchify(net(c_in[:, None, None, None] * x, c_noise), self.shape.patch_size, self.shape.in_chans)
        return c_skip[:, None, None, None] * x + c_out[:, None, None, None] * F_x

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        cfg, g, p = self.cfg, ctx.generator, self.shape.patch_size
        x0 = cfg.sigma_data * batch["image"]  # (B, C, H, W) at the schedules' data scale
        B = x0.shape[0]
        eps = randn(g, *x0.shape, device=x0.device, dtype=x0.dtype)
        if cfg.objective == "ddpm":
            # corrupt at t ~ U{0 … T−1}; predict ε
            t = self.diffusion.sample_t(B, g)
            eps_hat = self.net(self.diffusion.q_sample(x0, t, eps), t)  # (B, N, P)
            loss = token_mse(eps_hat, patchify(eps, p)).mean()
            return {"loss": loss, "t_mean": t.float().mean()}
        # edm: corrupt at σ = exp(N(P_mean, P_std²)); denoise; λ(σ)-weighted MSE to x_0
        sigma = edm_sigma(B, g, cfg.p_mean, cfg.p_std).to(x0.dtype)
        D_x = self.denoiser(self.net, x0 + sigma[:, None, None, None] * eps, sigma)
        per_image = (D_x - x0).pow(2).flatten(1).mean(dim=1)
        loss = (edm_weight(sigma, cfg.sigma_data) * per_image).mean()
        return {"loss": loss, "log_sigma_mean": sigma.log().mean()}

    # --- representations -------------------------------------------------------------------------
    def net_input(self, images: Tensor, t: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Normalised images (B, C, H, W) at DDPM timesteps t (B,) → (network input, conditioning (B,)).
        generator None: clean input (signal scaled as at t), conditioned on t."""
        x0 = self.cfg.sigma_data * images
        eps = None if generator is None else torch.randn(x0.shape, generator=generator, device=x0.device,
                                                         dtype=x0.dtype)
        if self.cfg.objective == "ddpm":
            x = self.diffusion.q_sample(x0, t, eps) if eps is not None else \
                self.diffusion.sqrt_ab[t].to(x0.dtype)[:, None, None, None] * x0
            return x, t
        sigma = self.sigma_of_t(t)
        _, _, c_in, c_noise = self._edm(sigma)
        x = x0 if eps is None else x0 + sigma.to(x0.dtype)[:, None, None, None] * eps
        return c_in.to(x.dtype)[:, None, None, None] * x, c_noise

    def _timesteps(self, t: Tensor | int, B: int, device: torch.device) -> Tensor:
        """An int, () or (B,) timestep → (B,) long on `device`, checked against the schedule."""
        t = torch.as_tensor(t, device=device).long()
        t = t.expand(B) if t.dim() == 0 else t
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= self.cfg.num_timesteps:
            raise ByonError(f"DDPM timesteps must lie in 0…{self.cfg.num_timesteps - 1}, got {lo}…{hi}")
        return t

    @torch.no_grad()
    def layer_features(self, images: Tensor, t: Tensor | None, generator: torch.Generator) -> list[Tensor]:
        """EMA network, every block: images (B, C, H, W) normalised, noised at DDPM timesteps t (B,) with fresh
        noise from `generator` (t None: clean input conditioned on feature_t) → depth × (B, D), the mean of
        the block's output patch tokens (global average pooling, CLS excluded)."""
        B = images.shape[0]
        if t is None:
            x, c = self.net_input(images, self._timesteps(self.cfg.feature_t, B, images.device), None)
        else:
            x, c = self.net_input(images, self._timesteps(t, B, images.device), generator)
        return [o[:, 1:].mean(dim=1) for o in self.ema.block_outputs(x, c)]

    @torch.no_grad()
    def features(self, images: Tensor) -> dict[str, Tensor]:
        """Block `feature_block` of the EMA network at feature_t: {'mean': GAP of its patch tokens, 'cls': its
        CLS token}. The probe noise comes from a generator seeded with the batch's contents and the number of
        earlier calls: different batches (a train and a test batch alike) draw different noise, a repeated
        call fresh noise, and a freshly loaded run extracts the same features every time."""
        t = self._timesteps(self.cfg.feature_t, images.shape[0], images.device)
        g = None
        if self.cfg.feature_noise:
            g = torch.Generator(device=images.device).manual_seed(_probe_seed(images, self._feature_calls))
            self._feature_calls += 1
        out = self.ema.block_outputs(*self.net_input(images, t, g), upto=self.feature_block)[-1]
        return {"cls": out[:, 0], "mean": out[:, 1:].mean(dim=1)}

    def resolved(self) -> dict[str, Any]:
        """The block and t the frozen evaluations read (feature_block None: the encoder's last)."""
        return {"feature_block": self.feature_block, "feature_t": self.cfg.feature_t}

    def eval_encoder(self) -> ViTEncoder:
        """The EMA network truncated after `feature_block`, at the fixed t = feature_t on clean input, as a
        plain timm ViT (a fresh copy; a truncated one ends in a parameter-free LayerNorm). With split "dit" any
        block can be the cut, decoder-half blocks included (`CondViT.folded_encoder`)."""
        if self.cfg.split == "mae" and self.feature_block > self.net.encoder_depth:
            raise ByonError(f"ddae.feature_block {self.feature_block} lies in the 'mae' split's decoder, which is no "
                            f"plain ViT; its encoder has blocks 1…{self.net.encoder_depth} (set ddae.feature_block "
                            f"within them, or train with ddae.split=dit)")
        t = torch.tensor([self.cfg.feature_t], device=self.diffusion.sqrt_ab.device)
        if self.cfg.objective == "ddpm":
            cond, scale = float(self.cfg.feature_t), self.cfg.sigma_data * float(self.diffusion.sqrt_ab[t])
        else:
            _, _, c_in, c_noise = self._edm(self.sigma_of_t(t))
            cond, scale = float(c_noise), self.cfg.sigma_data * float(c_in)
        return self.ema.folded_encoder(cond, depth=self.feature_block, input_scale=scale)

    # --- generation ------------------------------------------------------------------------------
    @property
    def default_sampler(self) -> str:
        return "ddim" if self.cfg.objective == "ddpm" else "heun"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, sampler: str | None = None, steps: int = 50) -> Tensor:
        """n images (n, C, H, W), dataset-normalised, from the EMA network. sampler: ddim (default for ddpm;
        for edm it is the Euler solver, which is DDIM on σ) | heun (EDM's 2nd-order solver; edm runs only)."""
        sampler = sampler or self.default_sampler
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        shape = (n, self.shape.in_chans, self.shape.img_size, self.shape.img_size)
        sd = self.cfg.sigma_data
        if self.cfg.objective == "ddpm":
            if sampler == "heun":
                raise ByonError("the Heun sampler needs an EDM-trained run (ddae.objective=edm); use --sampler ddim")
            mean = torch.tensor(self.info.mean, device=generator.device).view(1, -1, 1, 1)
            std = torch.tensor(self.info.std, device=generator.device).view(1, -1, 1, 1)
            lo, hi = sd * (0 - mean) / std, sd * (1 - mean) / std  # the pixel range [0, 1], clipped as DDAE does
            x0 = ddim_sample(lambda x, t: self.eps_model(self.ema, x, t), self.diffusion, shape, steps, generator,
                             clip=(lo, hi))
        else:
            x0 = heun_sample(lambda x, s: self.denoiser(self.ema, x, s), shape, steps, generator,
                             second_order=sampler == "heun")
        return x0 / sd

    # --- engine hooks ----------------------------------------------------------------------------
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.net, self.ema)]

    def ema_momentum(self, step: int, total_steps: int) -> float:
        """The decay of update k = step − 1 (0-based, at most the schedule's last):
        min(ema_decay, 1 − (1 + k)^(−2/3)), ema_pytorch's warm-up (inv_gamma 1, power 2/3); 0 at k = 0."""
        k = max(min(step, total_steps) - 1, 0)
        return min(self.cfg.ema_decay, 1 - (1 + k) ** (-2 / 3))


def _probe_seed(images: Tensor, call: int) -> int:
    """A 63-bit seed from a batch's bytes (B, C, H, W) and a call count."""
    h = hashlib.blake2b(images.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=8)
    h.update(call.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little") >> 1


__all__ = ["OBJECTIVES", "SAMPLERS", "DDAE", "DDAEConfig"]
