"""Supervised reference: the same encoder, augmentation and epochs as the self-supervised methods, trained with
labels (cross-entropy on a linear head over the CLS token, DeiT-style label smoothing).

This is the "supervised encoder of the same shape and epochs" reference row of the benchmarks, not a
pretraining method: it is the one method that reads `batch["label"]`, and a dataset without labels is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byon.data import DataInfo
from byon.errors import ByonError
from byon.methods.base import Method
from byon.methods.context import StepContext
from byon.nn.vit import EncoderShape, ViTEncoder


@dataclass
class SupervisedConfig:
    label_smoothing: float = 0.1
    pool: str = "cls"  # cls | mean: which feature the classification head reads

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ByonError(f"supervised.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.pool not in ("cls", "mean"):
            raise ByonError(f"supervised.pool must be 'cls' or 'mean', got '{self.pool}'")


class Supervised(Method):
    Config = SupervisedConfig
    # DeiT's recipe: AdamW (0.9, 0.999), wd 0.05, lr = 5e-4 · B / 512.
    recipe = {"optim": {"blr": 5e-4, "lr_scale_batch": 512, "betas": [0.9, 0.999], "weight_decay": 0.05}}
    default_feature = "cls"

    @classmethod
    def feature_of(cls, cfg: SupervisedConfig) -> str:
        return cfg.pool  # the feature the head is trained on

    def __init__(self, cfg: SupervisedConfig, shape: EncoderShape, info: DataInfo) -> None:
        super().__init__()
        if not info.num_classes:
            raise ByonError(f"method 'supervised' needs labels, and dataset '{info.name}' has none; "
                            "pick a labelled dataset (fashion-mnist, cifar10, imagefolder with class folders)")
        self.cfg, self.shape, self.info = cfg, shape, info
        self.encoder = ViTEncoder(shape)
        self.head = nn.Linear(shape.embed_dim, info.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.default_feature = self.feature_of(cfg)

    def forward(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        images, labels = batch["image"], batch["label"]  # (B, C, H, W), (B,)
        logits = self.head(self.encoder.features(images)[self.cfg.pool])  # (B, classes)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels).float().mean() * 100
        return {"loss": loss, "train_top1": acc}
