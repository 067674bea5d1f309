"""Online monitoring during pretraining: kNN accuracy and a collapse statistic on held-out labelled data.

Every `train.monitor_every_epochs` epochs the method's frozen-eval features of two fixed, seeded, stratified
subsets (`train.monitor_subset` images of the dataset's train split as the kNN memory, as many of its test
split as queries) are extracted, and `monitor/knn_top1` and `monitor/feature_std` are logged (solo-learn's
online kNN and collapse statistic). It only reads the model: no training RNG is drawn, and every module's
train/eval flag is put back as it was.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from byon.config import RunConfig
from byon.data import DataInfo, load_dataset
from byon.data.datasets import open_dataset
from byon.data.imagedata import take_subset
from byon.errors import ByonError
from byon.eval.features import extract_features
from byon.eval.knn import knn_classify

SUBSET_SEED = 0  # the same monitor images for every run and seed, so their curves compare


def feature_std(features: Tensor) -> float:
    """Collapse statistic of features (N, D): the per-dimension std of the L2-normalised rows, averaged over
    dimensions and multiplied by sqrt(D).

    Rows spread over the sphere (e.g. isotropic Gaussian features) have a per-dimension std of about
    1/sqrt(D), so the statistic is ≈ 1 without collapse; it is 0 when every row points the same way (full
    collapse) and in between when the features occupy a low-dimensional or narrow cone (dimensional or partial
    collapse), as in SimSiam's §4.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ByonError(f"feature_std needs (N, D) features with N >= 2, got {tuple(features.shape)}")
    z = F.normalize(features.double(), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


class OnlineMonitor(L.Callback):
    """kNN top-1 (the method's default feature) and `feature_std` of the held-out subsets, logged at the end
    of every `every` epochs. The data are loaded here, on every process, so a dataset without labels or
    without a test split fails before training starts. Every rank evaluates the same images with the same
    weights (so a sharded strategy's collectives line up; DDP replicas get the same numbers) and global rank 0
    logs them."""

    def __init__(self, cfg: RunConfig, info: DataInfo, every: int, subset: int, k: int = 20,
                 temperature: float = 0.07, streamed: bool = False) -> None:
        self.every, self.k, self.temperature, self.info = every, k, temperature, info
        self.batch_size = cfg.train.batch_size
        d = cfg.data
        self.data = {}
        for split in ("train", "test"):
            # a streamed run's splits are too large to decode whole: the subset is taken from the listing and
            # only its images are decoded (centre crops at the run's image size)
            full = (open_dataset(d.dataset, split, d.root, info.img_size) if streamed else
                    load_dataset(d.dataset, split, root=d.root, image_size=d.image_size, on_bad_file=d.on_bad_file))
            if full.labels is None:
                raise ByonError(f"train.monitor_every_epochs needs labelled data, but the {d.dataset} {split} "
                                f"split has no labels; set train.monitor_every_epochs=0")
            part = take_subset(full, min(subset, len(full)), SUBSET_SEED, split)
            self.data[split] = part.sample(len(part), d.on_bad_file) if streamed else part

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every:
            return
        # every rank runs the same forward passes (a sharded strategy needs all of them in it); rank 0 logs
        metrics = self.measure(pl_module.method, pl_module.device, trainer.precision_plugin.forward_context())
        if not trainer.is_global_zero:
            return
        # the row of the epoch's last step, logged before the epoch-end checkpoint saves the loggers: a resume
        # from that checkpoint keeps it (rows from its step on are dropped and logged again)
        step = max(trainer.global_step - 1, 0)
        for lg in trainer.loggers:
            lg.log_metrics(metrics | {"epoch": trainer.current_epoch}, step=step)

    def measure(self, method: torch.nn.Module, device: torch.device, context: Any = None) -> dict[str, float]:
        """{'monitor/knn_top1', 'monitor/feature_std'} of `method` on the monitor subsets; every module's
        train/eval flag is restored afterwards (methods such as BYON override `.train()`)."""

        modes = [(m, m.training) for m in method.modules()]
        method.eval()
        try:
            with context or nullcontext():
                feats = {split: extract_features(method.features, data.images, self.info.mean, self.info.std,
                                                 batch_size=self.batch_size, device=device)
                         for split, data in self.data.items()}
        finally:
            for m, mode in modes:
                m.training = mode
        ft = method.default_feature
        knn = knn_classify(feats["train"][ft], self.data["train"].labels, feats["test"][ft], self.data["test"].labels,
                           k=self.k, temperature=self.temperature)
        return {"monitor/knn_top1": knn["top1"], "monitor/feature_std": feature_std(feats["train"][ft])}


def online_monitor(cfg: RunConfig, info: DataInfo, streamed: bool = False) -> list[L.Callback]:
    """The monitor callback when `train.monitor_every_epochs` > 0, else none. `streamed`: the run streams its
    data, so the monitor decodes only its subsets."""
    every = cfg.train.monitor_every_epochs
    return [OnlineMonitor(cfg, info, every, cfg.train.monitor_subset, streamed=streamed)] if every > 0 else []


__all__ = ["OnlineMonitor", "feature_std", "online_monitor"]
