"""N-JEPA — Improving Joint Embedding Predictive Architecture with Diffusion Noise (papers/n-jepa.txt;
spec/baselines.md "N-JEPA").

I-JEPA (methods/ijepa.py: masks, context encoder, EMA targets, schedules) plus a second predictor that sees
the same context but whose mask tokens' position embeddings carry EDM noise, pos + σ·ε with
σ = exp(N(P_mean, P_std²)) = exp(N(−1.2, 1.2²)) and no input scaling (§3.1, §4.2). "Multi-level" noise
(§4.5, Table 3) draws a separate σ for each target block; single-level (the ablation) one σ per image. The
paper's single-level ("we initialize noise once and add it to the position embeddings of mask blocks") could
also mean one σ·ε copied to every block; we read it as one σ per image with fresh ε for every position of
every block, as in multi-level, so the two differ only in the number of noise levels.
Losses (eqs. 7–10): C-T = smooth-L1(clean prediction, target) and N-T = smooth-L1(noisy prediction,
target) are the prediction losses; N-C, the "denoise" loss, is the MSE between the noisy and the clean
predictor's outputs. L = C-T + w_NT·N-T + w_NC·N-C with the paper's best weights (1, 0.1, 0.1) (Table 2).
The two predictors and their mask tokens are unshared (§5, the better rows); both are options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byon.corruption.diffusion import edm_sigma
from byon.data import DataInfo
from byon.draws import Draw, randn
from byon.errors import ByonError, unknown
from byon.methods.context import StepContext
from byon.methods.ijepa import IJEPA, IJEPAConfig
from byon.nn.vit import EncoderShape

NOISE_LEVELS = ("multi", "single")
SHARING = ("unshared", "shared")


@dataclass
class NJEPAConfig(IJEPAConfig):
    # loss weights (eq. 10; Table 2's best: C-T 1, N-T 0.1, N-C 0.1)
    w_nt: float = 0.1
    w_nc: float = 0.1
    # EDM noise on the noisy predictor's mask-token positions (§3.1, §4.2)
    noise: str = "multi"  # multi: one σ per target block | single: one σ per image, fresh ε per block (Table 3)
    p_mean: float = -1.2
    p_std: float = 1.2
    predictors: str = "unshared"  # unshared (§5's better row) | shared: one predictor, the noise differs
    mask_tokens: str = "unshared"  # unshared (§5's better row) | shared between the two predictors
    nc_stop_grad: bool = False  # true: N-C treats the clean prediction as a fixed target (the paper has no stop)

    def validate(self, name: str = "njepa") -> None:
        super().validate(name)
        for key, valid in (("noise", NOISE_LEVELS), ("predictors", SHARING), ("mask_tokens", SHARING)):
            if getattr(self, key) not in valid:
                raise unknown(f"{name}.{key}", getattr(self, key), valid)
        if self.w_nt < 0 or self.w_nc < 0:
            raise ByonError(f"{name}.w_nt and {name}.w_nc must be ≥ 0, got {self.w_nt}, {self.w_nc}")
        if self.p_std < 0:
            raise ByonError(f"{name}.p_std must be ≥ 0, got {self.p_std}")


class NJEPA(IJEPA):
    Config = NJEPAConfig
    # I-JEPA's recipe (N-JEPA §4.4 follows it: AdamW, wd cosine 0.04 → 0.4, warm-up then cosine).
    recipe = IJEPA.recipe
    default_feature = "mean"
    name = "njepa"

    def __init__(self, cfg: NJEPAConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__(cfg, shape, info)
        self.cfg: NJEPAConfig = cfg
        self.noisy = cfg.w_nt > 0 or cfg.w_nc > 0  # both weights 0: plain I-JEPA, no noisy branch is built
        own_token = self.noisy and cfg.mask_tokens == "unshared"
        if self.noisy and cfg.predictors == "unshared":
            self.noisy_predictor = self.make_predictor(mask_token=own_token)
        elif own_token:  # one predictor, a second mask token
            self.noisy_mask_token = nn.Parameter(torch.zeros_like(self.predictor.mask_token))
            nn.init.normal_(self.noisy_mask_token, std=0.02)

    # --- the noise -------------------------------------------------------------------------------
    def position_noise(self, B: int, M: int, K: int, g: Draw) -> tuple[Tensor, Tensor]:
        """σ (B, M) — one per target block (multi-level) or repeated over an image's blocks (single) — and
        the noise σ·ε (B, M, K, Dp) for the noisy predictor's target positions, ε independent everywhere."""
        cfg = self.cfg
        if cfg.noise == "multi":
            sigma = edm_sigma(B, g, cfg.p_mean, cfg.p_std, per_sample=M)
        else:
            sigma = edm_sigma(B, g, cfg.p_mean, cfg.p_std).view(B, 1).expand(B, M)
        eps = randn(g, B, M, K, self.predictor.dim)
        return sigma, sigma[..., None, None] * eps

    def noisy_predict(self, z: Tensor, context_ids: Tensor, target_ids: Tensor, pos_noise: Tensor) -> Tensor:
        predictor = getattr(self, "noisy_predictor", self.predictor)
        token = getattr(self, "noisy_mask_token", None)
        if self.cfg.mask_tokens == "shared":
            token = self.predictor.mask_token
        return predictor(z, context_ids, target_ids, pos_noise=pos_noise, mask_token=token)

    # --- the step --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        cfg, g, images = self.cfg, ctx.generator, batch["image"]
        m = self.sample_masks(images.shape[0], g)
        z = self.encode_context(images, m)
        pred = self.predictor(z, m.context, m.targets)  # clean predictor (B, M, K_t, D)
        h = self.targets(images, m)
        logs = {"ct": self.prediction_loss(pred, h)}  # eq. 7
        loss = logs["ct"]
        if self.noisy:
            B, M, K = m.targets.shape
            sigma, noise = self.position_noise(B, M, K, g)
            noisy = self.noisy_predict(z, m.context, m.targets, noise)
            logs["nt"] = self.prediction_loss(noisy, h)  # eq. 8
            clean = pred.detach() if cfg.nc_stop_grad else pred
            logs["nc"] = F.mse_loss(noisy.float(), clean.float())  # eq. 9
            loss = loss + cfg.w_nt * logs["nt"] + cfg.w_nc * logs["nc"]
            logs["log_sigma"] = sigma.log().mean()
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}, **self.mask_logs(m, pred)}

    # --- engine hooks ----------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """The noisy branch's own mask token when it lives here (shared predictor), undecayed like the
        predictors' mask tokens (nn/predictor.py)."""
        return {"noisy_mask_token"} if hasattr(self, "noisy_mask_token") else set()


__all__ = ["NJEPA", "NJEPAConfig", "NOISE_LEVELS", "SHARING"]
