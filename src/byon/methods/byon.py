"""BYON — Bootstrap Your Own Noise (papers/byon.txt §3, appendices C, E, H, J, L; read per spec/byon.md).

One step: corrupt (random mask, IAN timestep/noise scale, DDPM noise on visible tokens) → encode (online
ViT, full sequence with a learnable mask embedding) → decode (one t-conditioned light decoder) → targets
(norm-pix clean patches for masked tokens, ε for visible ones) → L = L_demask + λ_dn·L_denoise +
λ_con·L_con, where L_con is the BYOL-style cosine to an EMA branch on the clean view, weighted per image
by SUE's δ_u. The online encoder (clean input, no t) is the product.

The dataclass defaults are the spec's reading (configs/byon/paper.yaml). configs/byon/default.yaml moves four of
them, chosen on the val split (configs/byon/README.md): visible-token encoder, β scale 0.05, λ_con 0.1 and a 1-block
decoder (plus MAE's val-tuned base lr); the EMA base 0.99 stayed after the 8-epoch confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byon.corruption.diffusion import SCHEDULES, DDPMSchedule
from byon.corruption.masking import TokenMask, check_ratio, random_masking
from byon.corruption.patches import denorm_pix, norm_pix, patchify, unpatchify
from byon.corruption.saliency import IAN_ETAS, SALIENCY_SCALES, IANOutput, ian, token_saliency
from byon.data import DataInfo
from byon.draws import Draw, randn
from byon.errors import ByonError, unknown
from byon.losses import SUE_SIGNS, bootstrap_cosine, masked_mse, sue_weight
from byon.methods.base import BootstrapTeacher
from byon.methods.context import StepContext
from byon.nn.decoders import CONDITIONINGS, CondDecoder
from byon.nn.vit import EncoderShape, ViTEncoder


@dataclass
class BYONConfig:
    # Table 1 components; see spec "Ablation switches"
    demask: bool = True  # false: mask ratio 0, every token noised
    denoise: bool = True  # false: visible tokens clean, no L_denoise (IAN has nothing to act on)
    contrastive: bool = True  # false: no EMA branch is built at all
    ian: bool = True  # false: t ~ U{0…T−1}, η = 1
    sue: bool = True  # false: δ_u = 1
    # corruption (items 1–3)
    views: str = "same"  # same: reference = the clean view (I_r = I) | two: a second draw of the run's augmentation
    mask_ratio: float = 0.6
    encoder_tokens: str = "full"  # full: mask embedding θ in the encoder (eq. 9) | visible: MAE-style
    num_timesteps: int = 1000
    beta_scale: float = 0.5  # linear β from 1e-4 to 0.02·beta_scale (appendix C: reduced betas)
    schedule: str = "linear"
    # IAN (items 4–5, eqs. 4–8)
    saliency_scale: str = "sqrt"  # sqrt: A = X·Xᵀ/sqrt(D) | none: the literal X·Xᵀ
    saliency_perturb: float = 0.5
    lambda_ian: float = 0.1  # appendix E's λ
    delta: float = 1.25
    delta_eta: float = 0.8
    ian_eta: str = "mean"  # mean: eq. 8 as printed (no image information, see saliency.IAN_ETAS) | spread
    t_min: float = 0.0
    t_max: float = 1.0
    # SUE (item 9, eqs. 1–2)
    tau_u: float = 0.5
    sue_sign: str = "intended"  # intended: U = tanh(d/2) | literal: the printed σ (δ_u ≡ 1)
    # decoder and targets (items 6–8)
    decoders: str = "shared"  # shared | two (one per task, appendix J)
    decoder_dim: int | None = None  # None: the encoder width (as MAE here)
    decoder_depth: int = 2
    decoder_heads: int | None = None  # None: the encoder's
    decoder_cond: str = "add"  # add | adaln
    norm_pix: bool = True
    # contrastive branch (item 10)
    proj_hidden: int | None = None  # None: 4·D
    proj_dim: int = 256
    ema_base: float = 0.99  # 0.996 in the paper (400 epochs); 0.99 for short runs
    ema_end: float = 1.0
    # loss weights (item 11, eq. 12)
    lambda_dn: float = 0.1
    lambda_con: float = 1.0

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "byon.mask_ratio")
        choices = {"views": ("same", "two"), "encoder_tokens": ("full", "visible"),
                   "decoders": ("shared", "two"), "decoder_cond": CONDITIONINGS,
                   "saliency_scale": SALIENCY_SCALES, "ian_eta": IAN_ETAS, "sue_sign": SUE_SIGNS, "schedule": SCHEDULES}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise unknown(f"byon.{name}", getattr(self, name), valid)
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ByonError(f"byon.t_min/t_max must satisfy 0 ≤ t_min ≤ t_max ≤ 1, got {self.t_min}, "
                            f"{self.t_max}")
        if not (self.demask or self.denoise or self.contrastive):
            raise ByonError("byon: demask, denoise and contrastive are all off — nothing to learn; "
                            "turn one on")
        if self.demask and self.mask_ratio == 0:
            raise ByonError("byon.demask needs mask_ratio > 0 (e.g. 0.6); to train without masking set "
                            "byon.demask=false")
        if self.contrastive and self.sue and not (self.demask or self.denoise):
            raise ByonError("byon.sue weights the contrastive loss by reconstruction quality but nothing is "
                            "reconstructed; set byon.sue=false or turn on byon.demask / byon.denoise")


@dataclass
class Corruption:
    """The source view. x: (B, N, P) clean patches; m.mask: (B, N) True = masked (θ) — the paper's M is
    its complement; x_t: (B, N, P) encoder input patches (noised where visible when denoising);
    eps: (B, N, P) unit Gaussian or None; t: (B,) long; eta: (B,); ian: IAN's output or None."""

    x: Tensor
    m: TokenMask
    x_t: Tensor
    eps: Tensor | None
    t: Tensor
    eta: Tensor
    ian: IANOutput | None


class BYON(BootstrapTeacher):
    Config = BYONConfig
    # BYON builds on MAE's recipe: AdamW (0.9, 0.95), wd 0.05, lr = 1.5e-4 · B / 256, warm-up + cosine.
    recipe = {"optim": {"blr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}}
    run_figures = ("ian-timesteps",)  # appendix C's figure 9 at the end of every run (analysis/timesteps.py)

    @classmethod
    def feature_of(cls, cfg: BYONConfig) -> str:
        """Read out like the encoder it is: MAE-style (visible tokens) → mean of the patch tokens, as MAE; the
        spec's full sequence → CLS. Chosen on val per reading (configs/byon/README.md, "Read-out feature")."""
        return "mean" if cfg.encoder_tokens == "visible" else "cls"

    def __init__(self, cfg: BYONConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        D = shape.embed_dim
        self.mask_ratio = cfg.mask_ratio if cfg.demask else 0.0
        self.visible_only = cfg.demask and cfg.encoder_tokens == "visible"
        self.default_feature = self.feature_of(cfg)
        self.encoder = ViTEncoder(shape)
        self.diffusion = DDPMSchedule(cfg.num_timesteps, beta_scale=cfg.beta_scale, kind=cfg.schedule)
        self.register_buffer("t_hist", torch.zeros(cfg.num_timesteps, dtype=torch.long))  # figure 9
        if cfg.demask and not self.visible_only:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, D))  # θ of eq. 9
            nn.init.normal_(self.mask_token, std=0.02)
        make_decoder = lambda: CondDecoder(  # noqa: E731
            D, shape.num_patches, shape.patch_dim, dim=cfg.decoder_dim or D, depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads or shape.num_heads, mlp_ratio=shape.mlp_ratio, cond=cfg.decoder_cond,
            mask_token=self.visible_only)
        # `decoder` is the shared one (or the de-masking one); `denoise_decoder` exists for decoders: two
        self.decoder = make_decoder() if (cfg.demask or cfg.denoise) else None
        two = cfg.decoders == "two" and cfg.demask and cfg.denoise
        self.denoise_decoder = make_decoder() if two else None
        self.init_bootstrap(cfg.proj_hidden, cfg.proj_dim, cfg.ema_base, cfg.ema_end, enabled=cfg.contrastive)

    # --- 1. corrupt ------------------------------------------------------------------------------
    def corrupt(self, images: Tensor, g: Draw) -> Corruption:
        """images: (B, C, H, W) dataset-normalised → the corrupted source view (eq. 9)."""
        cfg, B = self.cfg, images.shape[0]
        x = patchify(images, self.shape.patch_size)  # (B, N, P)
        m = random_masking(B, x.shape[1], self.mask_ratio, g, images.device)
        if not cfg.denoise:
            zeros = torch.zeros(B, dtype=torch.long, device=x.device)
            return Corruption(x, m, x, None, zeros, torch.ones(B, device=x.device), None)
        out = None
        if cfg.ian:  # saliency of the clean image's patch + position embeddings (eqs. 4–5), detached
            with torch.no_grad():
                S = token_saliency(self.encoder.patch_embeddings(images), cfg.saliency_scale)
            out = ian(S, g, cfg.lambda_ian, cfg.delta, cfg.t_min, cfg.t_max, cfg.num_timesteps,
                      cfg.delta_eta, cfg.saliency_perturb, cfg.ian_eta)
            t, eta = out.t, out.eta
        else:
            t, eta = self.diffusion.sample_t(B, g), torch.ones(B, device=x.device)
        eps = randn(g, *x.shape, device=x.device, dtype=x.dtype)
        x_t = torch.where(m.mask.unsqueeze(-1), x, self.diffusion.q_sample(x, t, eps, eta))
        return Corruption(x, m, x_t, eps, t, eta, out)

    # --- 2. encode -------------------------------------------------------------------------------
    def encode(self, c: Corruption) -> Tensor:
        """Online encoder on the source view → final-normed tokens (B, 1 + N, D), or (B, 1 + K, D)."""
        img = unpatchify(c.x_t, self.shape.patch_size, self.shape.in_chans)
        if self.visible_only:
            tokens = self.encoder.embed(img, ids_keep=c.m.ids_keep)
        elif self.cfg.demask:
            tokens = self.encoder.embed(img, mask=c.m.mask, mask_token=self.mask_token)
        else:
            tokens = self.encoder.embed(img)
        return self.encoder.forward_tokens(tokens)[0]

    # --- 3. decode -------------------------------------------------------------------------------
    def decode(self, tokens: Tensor, c: Corruption) -> tuple[Tensor, Tensor]:
        """→ (de-masking output, de-noising output ε̂), both (B, N, P); the same tensor when shared."""
        ids = c.m.ids_restore if self.visible_only else None
        out = self.decoder(tokens, c.t, ids)
        eps_hat = out if self.denoise_decoder is None else self.denoise_decoder(tokens, c.t, ids)
        return out, eps_hat

    # --- SUE -------------------------------------------------------------------------------------
    @torch.no_grad()
    def uncertainty(self, c: Corruption, pred: Tensor, target: Tensor, eps_hat: Tensor) -> Tensor:
        """δ_u (B,): masked tokens' de-masking output vs its target; visible tokens' x̂0 from ε̂ vs the
        clean patch (only tokens that have a reconstruction count)."""
        masked, visible = c.m.mask, ~c.m.mask
        recon, ref = torch.zeros_like(c.x), torch.zeros_like(c.x)
        if self.cfg.demask:
            recon = torch.where(masked.unsqueeze(-1), pred.float(), recon)
            ref = torch.where(masked.unsqueeze(-1), target.float(), ref)
        if self.cfg.denoise:
            x0_hat = self.diffusion.predict_x0(c.x_t, c.t, eps_hat.float(), c.eta)
            recon = torch.where(visible.unsqueeze(-1), x0_hat, recon)
            ref = torch.where(visible.unsqueeze(-1), c.x, ref)
        tokens = (masked & self.cfg.demask) | (visible & self.cfg.denoise)
        return sue_weight(recon, ref, self.cfg.tau_u, self.cfg.sue_sign, tokens)

    def reference_view(self, batch: dict[str, Tensor], ctx: StepContext) -> Tensor:
        if self.cfg.views == "same":
            return batch["image"]  # I_r = I: the clean copy of the source's view
        return ctx.augment(batch["raw"])  # a second draw of the run's augmentation (data.crop_*, data.hflip)

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        cfg, g = self.cfg, ctx.generator
        c = self.corrupt(batch["image"], g)
        tokens = self.encode(c)
        logs: dict[str, Tensor] = {}
        loss = c.x.new_zeros(())
        pred = eps_hat = target = None
        if self.decoder is not None:
            pred, eps_hat = self.decode(tokens, c)
            target = norm_pix(c.x) if cfg.norm_pix else c.x
        if cfg.demask:  # eq. 13: masked tokens → clean (norm-pix) patch
            logs["demask"] = masked_mse(pred, target, c.m.mask)
            loss = loss + logs["demask"]
        if cfg.denoise:  # eq. 16: visible tokens → ε
            logs["denoise"] = masked_mse(eps_hat, c.eps, ~c.m.mask)
            loss = loss + cfg.lambda_dn * logs["denoise"]
            logs |= {"t_mean": c.t.float().mean(), "eta_mean": c.eta.mean(),
                     "eta_std": c.eta.std(unbiased=False)}
            if c.ian is not None:
                logs["y_mean"] = c.ian.y.mean()
            if self.training:
                self.t_hist.index_add_(0, c.t, torch.ones_like(c.t))  # bincount would sync with the host
        if cfg.contrastive:  # eq. 3, weighted per image by SUE (eqs. 1–2)
            delta_u = self.uncertainty(c, pred, target, eps_hat) if cfg.sue else torch.ones_like(c.eta)
            p = self.predictor(self.projector(tokens[:, 0]))
            (z,) = self.teacher(self.reference_view(batch, ctx))
            logs["contrastive"], cos = bootstrap_cosine(p, z, delta_u)
            loss = loss + cfg.lambda_con * logs["contrastive"]
            logs |= {"delta_u": delta_u.mean(), "cos": cos.mean()}
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}}

    # --- engine hooks ----------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures, each (B, C, H, W) in normalised image space: input, corrupted (masked patches grey,
        visible ones noised), denoised (x̂0 from ε̂ on visible patches), demasked (predicted masked patches) and
        reconstruction (both together). Norm-pix predictions get each clean patch's own mean/var back."""
        if self.decoder is None:
            raise ByonError("this BYON run has neither demask nor denoise on, so it reconstructs nothing")
        c = self.corrupt(images, generator)
        pred, eps_hat = self.decode(self.encode(c), c)
        if self.cfg.norm_pix:
            pred = denorm_pix(pred, c.x)
        masked = c.m.mask.unsqueeze(-1)
        denoised = self.diffusion.predict_x0(c.x_t, c.t, eps_hat, c.eta) if self.cfg.denoise else c.x
        img = lambda x: unpatchify(x, self.shape.patch_size, self.shape.in_chans)  # noqa: E731
        out = {"input": images, "corrupted": img(c.x_t.masked_fill(masked, 0))}
        if self.cfg.denoise:
            out["denoised"] = img(denoised.masked_fill(masked, 0))
        if self.cfg.demask:
            out["demasked"] = img(pred.masked_fill(~masked, 0))
        return out | {"reconstruction": img(torch.where(masked, pred, denoised))}


__all__ = ["BYON", "BYONConfig", "Corruption"]
