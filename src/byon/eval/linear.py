"""Linear probe on cached frozen features: BatchNorm1d(affine=False) + Linear, as in MAE."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byon.errors import ByonError, unknown
from byon.eval.knn import check_split, count_classes, topk_accuracy

# base lr at batch 256, scaled linearly with the batch (MAE: blr 0.1, momentum 0.9, wd 0)
BASE_LR = {"sgd": 0.1, "adamw": 1e-3}


def probe_head(dim: int, num_classes: int, generator: torch.Generator | None = None) -> nn.Sequential:
    """BatchNorm1d(D, affine=False, eps=1e-6) + Linear(D, C), weights ~ trunc_normal(std 0.01) as in MAE."""
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01, generator=generator)
    nn.init.zeros_(head[1].bias)
    return head


@contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    # (256, D) steps are too small to split across threads; on a busy CPU the thread barriers made the
    # probe ~10x slower than one thread
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, epochs: int = 30,
                 batch_size: int = 256, lr: float | None = None, weight_decay: float = 0.0, seed: int = 0,
                 device: torch.device | str = "cpu", num_classes: int | None = None,
                 optimizer: str = "sgd") -> dict:
    """Train a linear head on features (N, D) with labels (N,); evaluate on the test split.

    Shuffled minibatches from a seeded generator, per-step cosine lr from `lr` to 0, no augmentation.
    `lr=None` means BASE_LR[optimizer] · batch_size / 256. Returns {"top1", "top5" (when ≥ 5 classes),
    "train_loss" (mean over the last epoch), and the settings}, accuracies in percent.
    """
    check_split(train_f, train_y, test_f, test_y)
    if optimizer not in BASE_LR:
        raise unknown("probe optimizer", optimizer, BASE_LR)
    if epochs < 1 or batch_size < 1:
        raise ByonError(f"linear probe needs epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
    if train_f.shape[0] < 2:
        raise ByonError("linear probe needs at least 2 training rows (BatchNorm uses batch statistics)")
    C = count_classes(train_y, test_y, num_classes)
    lr = BASE_LR[optimizer] * batch_size / 256 if lr is None else lr
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    head = probe_head(train_f.shape[1], C, gen).to(device)
    if optimizer == "sgd":
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    x = train_f.float().to(device)
    y = train_y.long().to(device)
    n = x.shape[0]
    # a last batch of one row would break BatchNorm's batch statistics: drop it (it is reshuffled anyway)
    steps_per_epoch = max(1, n // batch_size + int(n % batch_size > 1))
    total = epochs * steps_per_epoch
    with _single_thread(device):
        head.train()
        step = 0
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            for i in range(steps_per_epoch):
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
                idx = perm[i * batch_size:(i + 1) * batch_size]
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                step += 1
        head.eval()
        ks = (1, 5) if C >= 5 else (1,)
        with torch.inference_mode():
            logits = head(test_f.float().to(device))
            hits = topk_accuracy(logits, test_y.long().to(device), ks)
    out = {"top1": 100.0 * hits[0] / test_f.shape[0]}
    if C >= 5:
        out["top5"] = 100.0 * hits[1] / test_f.shape[0]
    return out | {"train_loss": float(loss_sum) / steps_per_epoch, "epochs": epochs, "batch_size": batch_size,
                  "lr": lr, "weight_decay": weight_decay, "optimizer": optimizer, "seed": seed}
