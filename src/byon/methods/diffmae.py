"""DiffMAE — Diffusion Models as Masked Autoencoders (Wei et al., 2023; spec/baselines.md; no official code).

MAE's encoder on the clean visible 25 % of patches; the decoder is a conditional diffusion model of the
masked patches: it receives them noised by the DDPM forward process at one timestep t per image, embedded
and tagged with t, attends to the encoder's latents, and predicts the clean patches x0. Loss: MSE on the
masked patches. The encoder is evaluated on clean, unmasked images.

The diffusion runs in the target space: x0 is the dataset-normalised patch (norm_pix: false, the default — the
spec's clean pixels) or the per-patch norm-pix patch (norm_pix: true, MAE's target), and
x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε.

Decoder (`nn.decoders.DiffusionDecoder`): "joint" (default) puts the visible latents and the noisy masked
tokens in one self-attention sequence; "cross" makes the noisy tokens cross-attend to the latents only;
"cross-self" adds self-attention among the noisy tokens. Sizes: DiffMAE's ViT-L decoder is MAE's (8 blocks,
width 512); scaled like MAE's here: 2 blocks at the encoder width (128 at vit-micro), the encoder's heads,
timestep MLP from a 256-d sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byon.corruption.diffusion import SCHEDULES, DDPMSchedule
from byon.corruption.masking import TokenMask, check_ratio, random_masking
from byon.corruption.patches import denorm_pix, masked_panels, norm_pix, patchify
from byon.data import DataInfo
from byon.draws import Draw, randn
from byon.errors import ByonError, unknown
from byon.losses import masked_mse
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.decoders import DIFFUSION_ATTENTION, DiffusionDecoder
from byon.nn.vit import EncoderShape, ViTEncoder


@dataclass
class DiffMAEConfig:
    mask_ratio: float = 0.75
    norm_pix: bool = False  # false: clean pixels (dataset-normalised) | true: MAE's per-patch norm-pix target
    num_timesteps: int = 1000
    schedule: str = "cosine"  # cosine | linear (β from 1e-4 to 0.02)
    decoder: str = "joint"  # joint | cross | cross-self
    decoder_dim: int | None = None  # None: the encoder width (512 at ViT-L scale; as MAE here)
    decoder_depth: int = 2  # 8 at ViT-L scale; 2 suits 6-block encoders
    decoder_heads: int | None = None  # None: the encoder's

    def validate(self) -> None:
        check_ratio(self.mask_ratio, "diffmae.mask_ratio")
        if self.mask_ratio == 0:
            raise ByonError("diffmae.mask_ratio must be > 0 (the decoder denoises the masked patches), e.g. 0.75")
        if self.schedule not in SCHEDULES:
            raise unknown("diffmae.schedule", self.schedule, SCHEDULES)
        if self.decoder not in DIFFUSION_ATTENTION:
            raise unknown("diffmae.decoder", self.decoder, DIFFUSION_ATTENTION)
        if self.num_timesteps < 1:
            raise ByonError(f"diffmae.num_timesteps must be at least 1, got {self.num_timesteps}")


class DiffMAE(Method):
    Config = DiffMAEConfig
    # DiffMAE pretrains with MAE's recipe: AdamW (0.9, 0.95), wd 0.05, lr = 1.5e-4 · B / 256, warm-up + cosine.
    recipe = {"optim": {"blr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}}
    default_feature = "mean"

    def __init__(self, cfg: DiffMAEConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.shape, self.info = cfg, shape, info
        self.encoder = ViTEncoder(shape)
        self.diffusion = DDPMSchedule(cfg.num_timesteps, kind=cfg.schedule)
        self.decoder = DiffusionDecoder(
            shape.embed_dim, shape.num_patches, shape.patch_dim, dim=cfg.decoder_dim or shape.embed_dim,
            depth=cfg.decoder_depth, num_heads=cfg.decoder_heads or shape.num_heads, mlp_ratio=shape.mlp_ratio,
            attention=cfg.decoder)

    def denoise(self, images: Tensor, g: Draw, t: int | None = None
                ) -> tuple[Tensor, Tensor, Tensor, TokenMask, Tensor]:
        """Steps 1–3 on dataset-normalised images (B, C, H, W), at one random t per image (or the given t) →
        (x̂0 (B, N, P), x0 the target patches, x_t their noised copy (B, N, P), the mask, t (B,))."""
        B = images.shape[0]

        # 1. corrupt: mask 75 %; noise the (target-space) patches at one t per image
        m = random_masking(B, self.shape.num_patches, self.cfg.mask_ratio, g, images.device)
        x0 = patchify(images, self.shape.patch_size)  # (B, N, P)
        if self.cfg.norm_pix:
            x0 = norm_pix(x0)
        t = self.diffusion.sample_t(B, g) if t is None else torch.full((B,), t, device=images.device)
        eps = randn(g, *x0.shape, device=x0.device, dtype=x0.dtype)
        x_t = self.diffusion.q_sample(x0, t, eps)  # only the masked positions reach the decoder

        # 2. encode the clean visible patches (+ CLS)
        latent = self.encoder.forward_encoder(images, ids_keep=m.ids_keep)  # (B, 1 + K, D)

        # 3. decode: denoise the masked patches, conditioned on the latents and t
        return self.decoder(latent, x_t, m, t), x0, x_t, m, t  # x̂0: (B, N, P)

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        pred, x0, _, m, t = self.denoise(batch["image"], ctx.generator)  # dataset-normalised (B, C, H, W)

        # 4-5. predict x0; MSE on the masked patches
        loss = masked_mse(pred, x0, m.mask)
        return {"loss": loss, "recon": loss.detach(), "t_mean": t.float().mean()}

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """For figures, each (B, C, H, W) normalised: input, corrupted (the masked patches noised at t = T/2, the
        visible ones clean), reconstruction (the one-step x̂0 at the masked patches, the visible ones pasted),
        prediction (every patch; only the masked ones are predictions). Norm-pix targets get each patch's own
        mean/var back for display, as MAE's visualisation does."""
        x = patchify(images, self.shape.patch_size)
        pred, _, x_t, m, _ = self.denoise(images, generator, t=self.diffusion.num_timesteps // 2)
        if self.cfg.norm_pix:
            pred, x_t = denorm_pix(pred, x), denorm_pix(x_t, x)
        shown = torch.where(m.mask.unsqueeze(-1), x_t, x)
        return masked_panels(images, pred, m.mask, self.shape.patch_size, shown=shown)


__all__ = ["DiffMAE", "DiffMAEConfig"]
