"""End-to-end fine-tuning of a run's eval encoder, with timm's pieces of the MAE / BEiT fine-tuning recipe.

Layer-wise lr decay (`timm.optim.create_optimizer_v2(layer_decay=...)` over the encoder's `group_matcher`:
patch embedding + CLS token → block 0 … block L−1 (the final norm with the last) → head), per-step warm-up + cosine
(`timm.scheduler.CosineLRScheduler`), mixup / cutmix with label smoothing (`timm.data.Mixup` +
`SoftTargetCrossEntropy`), RandAugment (`rand_augment_transform`, RGB images only), stochastic depth on the
blocks, and the run's own crop / flip augmentation. Reports top-1 on the test split.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import rand_augment_transform
from timm.layers import DropPath
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn

from byon.data import BatchLoader, load_dataset
from byon.data.transforms import augment, normalize
from byon.errors import ByonError, unknown
from byon.eval.frozen import checkpoint_tag, holdout, non_default, result_path
from byon.eval.knn import topk_accuracy
from byon.methods.context import step_generator
from byon.rundir import load_run, pick_device, write_json

POOLS = {"cls": "token", "mean": "avg"}  # our feature names → timm's global_pool


@dataclass
class FinetuneConfig:
    """Defaults follow MAE's ViT-B fine-tuning recipe, scaled down in epochs and batch."""

    epochs: int = 10
    batch_size: int = 128
    blr: float = 5e-4  # lr = blr · batch_size / 256
    layer_decay: float = 0.75  # lr of group l (stem 0, blocks 1…L, head L + 1) × layer_decay^(L + 1 − l); 1 = off
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    mixup: float = 0.8  # Beta(α, α) of mixup; 0 = off
    cutmix: float = 1.0  # Beta(α, α) of cutmix; 0 = off
    smoothing: float = 0.1  # label smoothing
    drop_path: float = 0.1  # stochastic depth of the last block; linear from 0 over the blocks
    randaug: str = "rand-m9-mstd0.5-inc1"  # timm RandAugment spec, RGB images only; "" = off
    pool: str | None = None  # cls | mean; None: the method's default feature
    subset: int | None = None  # stratified, seeded subset of the labelled training split
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    eval_batch_size: int = 512

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ByonError(f"fine-tuning needs epochs, batch_size and eval_batch_size >= 1, got {self.epochs}, "
                            f"{self.batch_size} and {self.eval_batch_size}")
        if self.blr <= 0 or not 0 < self.layer_decay <= 1:
            raise ByonError(f"fine-tuning needs blr > 0 and 0 < layer_decay <= 1, got {self.blr} and "
                            f"{self.layer_decay}")
        for name in ("weight_decay", "warmup_epochs", "min_lr", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ByonError(f"fine-tuning {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.smoothing < 1 or not 0 <= self.drop_path < 1:
            raise ByonError(f"fine-tuning smoothing and drop_path must be in [0, 1), got {self.smoothing} and "
                            f"{self.drop_path}")
        if self.pool is not None and self.pool not in POOLS:
            raise unknown("fine-tuning pool", self.pool, POOLS)
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ByonError(f"mixup/cutmix pair each image with another of its batch and need an even batch size, "
                            f"got {self.batch_size}; use {self.batch_size + 1} or turn them off (mixup=0 cutmix=0)")


def classifier(encoder: nn.Module, num_classes: int, pool: str, drop_path: float) -> nn.Module:
    """A copy of `encoder` (a ViTEncoder) with a linear head on its `pool` ('cls' | 'mean') feature and
    stochastic depth rising linearly from 0 to `drop_path` over the blocks; the source stays untouched.
    The head starts near zero (trunc-normal, std 2e-5), as in MAE."""
    model = copy.deepcopy(encoder)
    rates = torch.linspace(0, drop_path, len(model.blocks)).tolist()
    for blk, r in zip(model.blocks, rates):
        blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
    model.reset_classifier(num_classes, POOLS[pool])
    nn.init.trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    return model


def logits(model: nn.Module, images: Tensor) -> Tensor:
    """(B, C, H, W) normalised → (B, num_classes). (timm's `forward` passes an attn_mask that our
    `forward_features` does not take, so the two halves are called directly.)"""
    return model.forward_head(model.forward_encoder(images))


def randaugment(images: Tensor, transform: Any) -> Tensor:
    """Apply a PIL transform to each uint8 (3, H, W) image of (B, 3, H, W) on the CPU; uint8 out."""
    out = [torch.from_numpy(np.asarray(transform(Image.fromarray(img.permute(1, 2, 0).numpy()))).copy())
           for img in images.cpu()]
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (CPU and this CUDA device: drop-path), numpy (mixup, cutmix) and `random` (RandAugment) for
    the block, and restore their states afterwards: the caller's random streams are left as they were."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@torch.inference_mode()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, mean: tuple[float, ...], std: tuple[float, ...],
             batch_size: int, device: torch.device) -> dict[str, float]:
    """Top-1 (and top-5 with ≥ 5 classes) in percent of `model` on uint8 images (N, C, H, W)."""
    model.eval()
    C = model.head.out_features
    ks = (1, 5) if C >= 5 else (1,)
    hits = [0] * len(ks)
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i:i + batch_size].to(device), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = logits(model, x).float()
        hits = [h + n for h, n in zip(hits, topk_accuracy(out, labels[i:i + batch_size].to(device), ks))]
    res = {"top1": 100.0 * hits[0] / images.shape[0]}
    if C >= 5:
        res["top5"] = 100.0 * hits[1] / images.shape[0]
    return res


def finetune(run_dir: str | Path, dataset: str | None = None, root: str | None = None,
             cfg: FinetuneConfig | None = None, readout: dict[str, Any] | None = None,
             split: str = "test", checkpoint: str | None = None) -> dict[str, Any]:
    """Fine-tune the run's eval encoder end to end on `dataset` (default: the run's); writes and returns
    eval/finetune-<dataset>[-<readout>].json: {"top1", "top5", "history": per-epoch train loss and lr, the
    settings}. `readout`: read-out settings the run is loaded with (`load_run`; e.g. DDAE's feature block).
    `split`: 'test', or 'val' to train on the rest of the training split and score on the run's held-out val
    images (`frozen.holdout`; how a fine-tuning recipe is chosen without looking at test). `checkpoint`: which of
    the run's checkpoints (`rundir.find_checkpoint`)."""
    cfg = cfg or FinetuneConfig()
    cfg.validate()
    run_dir = Path(run_dir)
    run_cfg, method = load_run(run_dir, readout=readout, checkpoint=checkpoint)
    info = method.info
    dataset = dataset or run_cfg.data.dataset
    device = pick_device(cfg.device)
    load = dict(root=root, image_size=run_cfg.data.image_size, on_bad_file=run_cfg.data.on_bad_file)
    val_size, val_seed = holdout(run_cfg, split, dataset)
    load |= dict(val_size=val_size, val_seed=val_seed)
    train = load_dataset(dataset, "train", subset=cfg.subset, seed=cfg.seed, **load)
    test = load_dataset(dataset, split, **load)
    if train.labels is None or test.labels is None:
        raise ByonError(f"dataset '{dataset}' has no labels; fine-tuning needs a labelled dataset")
    if train.in_chans != info.in_chans or train.img_size != info.img_size:
        raise ByonError(f"dataset '{dataset}' has {train.in_chans}x{train.img_size}px images but the run's encoder "
                        f"expects {info.in_chans}x{info.img_size}px; fine-tune on data shaped like the training data")
    if cfg.batch_size > len(train):
        raise ByonError(f"fine-tuning batch size {cfg.batch_size} is larger than the {len(train)} training images; "
                        f"use --batch-size {len(train) - len(train) % 2} or less")
    num_classes = max(train.num_classes, int(train.labels.max()) + 1, int(test.labels.max()) + 1)
    pool = cfg.pool or method.default_feature
    # RandAugment's ops (colour, posterize, solarize, …) are defined on RGB images
    rgb = train.in_chans == 3
    randaug = "off" if not cfg.randaug else cfg.randaug if rgb else \
        f"skipped: RandAugment needs RGB images, these have {train.in_chans} channel(s)"

    t0 = time.perf_counter()
    with seeded(cfg.seed, device):
        model = classifier(method.eval_encoder(), num_classes, pool, cfg.drop_path).to(device)
        del method
        lr = cfg.blr * cfg.batch_size / 256
        opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=cfg.weight_decay,
                                  layer_decay=cfg.layer_decay if cfg.layer_decay < 1 else None)
        loader = BatchLoader(train, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
        total = cfg.epochs * len(loader)
        warmup = min(int(round(cfg.warmup_epochs * len(loader))), total)
        sched = CosineLRScheduler(opt, t_initial=max(total - warmup, 1), lr_min=cfg.min_lr, warmup_t=warmup,
                                  warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
        mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                          num_classes=num_classes)
            criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
        else:
            criterion = nn.CrossEntropyLoss()
        ra = None
        if rgb and cfg.randaug:
            ra = rand_augment_transform(cfg.randaug, {"translate_const": int(info.img_size * 0.45),
                                                      "img_mean": tuple(round(255 * m) for m in info.mean)})

        history = []
        step = 0
        for epoch in range(cfg.epochs):
            model.train()
            loader.set_epoch(epoch)
            loss_sum = torch.zeros((), device=device)
            for raw, y in loader:
                sched.step_update(step)
                if ra is not None:
                    raw = randaugment(raw, ra)
                g = step_generator(cfg.seed, step, 0, device)
                x = augment(raw.to(device), run_cfg.data, info.mean, info.std, g)
                y = y.to(device)
                if mixup is not None:
                    x, y = mixup(x, y)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = logits(model, x)
                loss = criterion(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                step += 1
            if not torch.isfinite(loss_sum):
                raise ByonError(f"fine-tuning diverged (non-finite training loss in epoch {epoch}); lower --blr")
            history.append({"epoch": epoch, "train_loss": float(loss_sum) / len(loader),
                            "lr": max(g["lr"] for g in opt.param_groups)})
        res = accuracy(model, test.images, test.labels, info.mean, info.std, cfg.eval_batch_size, device)

    result: dict[str, Any] = {
        "eval": "finetune", "run": str(run_dir), "method": run_cfg.method, "dataset": dataset, "split": split, **res,
        "train_loss": history[-1]["train_loss"], "pool": pool, "lr": lr, "steps": step,
        "randaugment": randaug, "train_images": len(train), "test_images": len(test),
        "wall_time_s": round(time.perf_counter() - t0, 2), "device": str(device),
        "readout": readout or {}, "encoder_blocks": len(model.blocks), "settings": dataclasses.asdict(cfg),
        "history": history,
    }
    chosen = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("device", "eval_batch_size")}  # speed only
    settings = non_default(FinetuneConfig, **chosen) | ({"checkpoint": checkpoint_tag(checkpoint)} if checkpoint
                                                        else {})
    write_json(result_path(run_dir, "finetune", dataset, None, readout, split, settings), result)
    return result
