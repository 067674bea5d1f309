"""The method contract. `Method` holds defaults only: a method subclasses it, overrides what it has, and calls
nothing of it but `nn.Module.__init__`. `BootstrapTeacher` is BYOL's online heads and EMA teacher, shared by
BYOL and BYON."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from byon.data import DataInfo, ImageData
from byon.methods.context import StepContext
from byon.nn.ema import cosine_momentum, make_target
from byon.nn.heads import MLPHead
from byon.nn.vit import ViTEncoder


class Method(nn.Module):
    """A pretraining method: `__init__(cfg: Config, shape: EncoderShape, info: DataInfo)` builds its parts (the
    online encoder as `self.encoder`, `self.info = info`); `forward(batch, ctx)` is one training step."""

    Config: ClassVar[type]  # its config dataclass; the YAML section is named after the method
    recipe: ClassVar[dict[str, Any]] = {}  # default overrides of the optim / train / data sections
    default_feature: str = "cls"  # the feature `top1` reports: "cls" or "mean"
    readout: ClassVar[tuple[str, ...]] = ()  # its config keys that `byon eval --set` may change (read-out only)
    # True: the engine puts the run's augmented view in batch["image"]; False: the method draws its own views
    # (with `ctx.augment` for the run's augmentation), so no unused view is drawn
    augment_batch: ClassVar[bool] = True
    run_figures: ClassVar[tuple[str, ...]] = ()  # `byon.analysis.RUN_FIGURES` drawn at the end of every run
    encoder: ViTEncoder
    info: DataInfo

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """batch: "raw" uint8 (B, C, H, W), "label" (B,), and with `augment_batch` "image", the augmented and
        normalised float (B, C, H, W) → {"loss": scalar with a graph, other detached scalars to log}."""
        raise NotImplementedError

    # --- EMA targets -----------------------------------------------------------------------------
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs the engine updates after every optimizer step."""
        return []

    def ema_momentum(self, step: int, total_steps: int) -> float:
        """The momentum of the EMA update after optimizer step `step` (1-based) of `total_steps`."""
        return 1.0

    def train(self, mode: bool = True) -> Method:
        """EMA targets stay in eval mode (no dropout or drop path in a teacher), but their BatchNorm layers follow
        `mode`: BYOL's target projector normalises with batch statistics, as the online one does."""
        super().train(mode)
        for _, target in self.ema_pairs():
            target.eval()
            for m in target.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(mode)
        return self

    # --- what evaluation reads ---------------------------------------------------------------------
    @classmethod
    def feature_of(cls, cfg: Any) -> str:
        """The feature `top1` reports for the method config `cfg` (the instance's `default_feature`), known
        without building the model: the class's unless one of its settings picks it."""
        return cls.default_feature

    def eval_encoder(self) -> ViTEncoder:
        """The encoder frozen evaluation and export use."""
        return self.encoder

    def ema_encoder(self) -> ViTEncoder | None:
        """The EMA (target) encoder kept beside the online `encoder`, if any (`--encoder ema`)."""
        return next((target for online, target in self.ema_pairs() if online is self.encoder), None)

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """Normalised (B, C, H, W) → {"cls": (B, D), "mean": (B, D)}."""
        return self.eval_encoder().features(images)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (suffixes) that join the no-decay group."""
        return set()

    # --- run hooks -------------------------------------------------------------------------------
    def setup_data(self, data: ImageData) -> None:
        """State fitted on the training split before training, kept in persistent buffers (l-DAE's PCA basis)."""

    def resolved(self) -> dict[str, Any]:
        """The values the method settled for its config's None defaults (kept in summary.json)."""
        return {}

    def run_files(self) -> dict[str, Any]:
        """JSON files for the run directory after training, name → object (l-DAE's PCA spectrum); the engine
        writes them. Figures are `run_figures`."""
        return {}


class BootstrapTeacher(Method):
    """BYOL's bootstrap pieces: the online projector → predictor (MLP heads) and the teacher, EMA copies of the
    encoder and the projector (no gradient), whose momentum follows BYOL's cosine schedule
    m = end − (end − base)·(cos(π·k/K) + 1)/2 after update k of K. The attribute names are the checkpoints'
    state-dict keys (target_encoder.*, target_projector.*)."""

    def init_bootstrap(self, hidden: int | None, proj_dim: int, ema_base: float, ema_end: float,
                       enabled: bool = True) -> None:
        """Build the heads and the teacher on `self.encoder` (hidden None: 4·D); `enabled` False builds none."""
        self.ema_base, self.ema_end = ema_base, ema_end
        if not enabled:
            self.projector = self.predictor = self.target_encoder = self.target_projector = None
            return
        D = self.encoder.embed_dim
        hidden = hidden or 4 * D
        self.projector = MLPHead(D, hidden, proj_dim)
        self.predictor = MLPHead(proj_dim, hidden, proj_dim)
        self.target_encoder = make_target(self.encoder)
        self.target_projector = make_target(self.projector)

    @torch.no_grad()
    def teacher(self, views: Tensor, n: int = 1) -> tuple[Tensor, ...]:
        """n normalised views stacked on the batch dim (n·B, C, H, W) → the teacher's n projections (B, proj_dim):
        the encoder (LayerNorm only) takes them at once, the BatchNorm projector one view at a time."""
        return tuple(self.target_projector(t) for t in self.target_encoder.forward_encoder(views)[:, 0].chunk(n))

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.target_encoder is None:
            return []
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def ema_momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(self.ema_base, self.ema_end, step / total_steps)


__all__ = ["BootstrapTeacher", "Method"]
