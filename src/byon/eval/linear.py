"""Linear probes on cached frozen features: BatchNorm1d(affine=False) + Linear, as in MAE; many heads trained in
one pass over a grid of features × learning rates, as in DINOv2's linear evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byon.data.imagedata import subset_indices
from byon.errors import ByonError, unknown
from byon.eval.knn import check_split, count_classes, topk_accuracy
from byon.rundir import torch_threads

# base lr at batch 256, scaled linearly with the batch (MAE: blr 0.1, momentum 0.9, wd 0)
BASE_LR = {"sgd": 0.1, "adamw": 1e-3}


def probe_head(dim: int, num_classes: int, generator: torch.Generator | None = None) -> nn.Sequential:
    """BatchNorm1d(D, affine=False, eps=1e-6) + Linear(D, C), weights ~ trunc_normal(std 0.01) as in MAE."""
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01, generator=generator)
    nn.init.zeros_(head[1].bias)
    return head


def _single_thread(device: torch.device) -> AbstractContextManager[None]:
    # (256, D) steps are too small to split across threads; on a busy CPU the thread barriers made the
    # probe ~10x slower than one thread
    return torch_threads(1 if device.type == "cpu" else None)


def linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, epochs: int = 30,
                 batch_size: int = 256, lr: float | None = None, weight_decay: float = 0.0, seed: int = 0,
                 device: torch.device | str = "cpu", num_classes: int | None = None,
                 optimizer: str = "sgd") -> dict:
    """Train a linear head on features (N, D) with labels (N,); evaluate on the test split.

    Shuffled minibatches from a seeded generator, per-step cosine lr from `lr` to 0, no augmentation.
    `lr=None` means BASE_LR[optimizer] · batch_size / 256. Returns {"top1", "top5" (when ≥ 5 classes),
    "train_loss" (mean over the last epoch), and the settings}, accuracies in percent.
    """
    if optimizer not in BASE_LR:
        raise unknown("probe optimizer", optimizer, BASE_LR)
    lr = BASE_LR[optimizer] * batch_size / 256 if lr is None else lr
    (r,) = linear_heads({"f": train_f}, train_y, {"f": test_f}, test_y, [("f", lr)], epochs=epochs,
                        batch_size=batch_size, weight_decay=weight_decay, seed=seed, device=device,
                        num_classes=num_classes, optimizer=optimizer)
    out = {k: r[k] for k in ("top1", "top5", "train_loss") if k in r}
    return out | {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                  "optimizer": optimizer, "seed": seed}


def linear_heads(train_f: dict[str, Tensor], train_y: Tensor, test_f: dict[str, Tensor], test_y: Tensor,
                 heads: Sequence[tuple[str, float]], epochs: int = 30, batch_size: int = 256,
                 weight_decay: float = 0.0, seed: int = 0, device: torch.device | str = "cpu",
                 num_classes: int | None = None, optimizer: str = "sgd") -> list[dict]:
    """Several linear probes trained in one pass over the same minibatches (DINOv2's linear eval).

    train_f / test_f: {feature: (N, D_f)} / {feature: (M, D_f)}; heads: (feature, lr) pairs, each a
    `probe_head` on that feature with its own lr and cosine schedule. Every head's weights are drawn from a
    generator seeded `seed` (heads on one feature start identical and differ only in lr); the batch order
    comes from the generator that initialised the first head, so a single head is exactly `linear_probe`.
    Returns one {"feature", "lr", "top1", "top5" (when ≥ 5 classes), "train_loss"} per head, in order.
    """
    if not heads:
        raise ByonError("linear_heads needs at least one (feature, lr) head")
    for ft, _ in heads:
        if ft not in train_f or ft not in test_f:
            raise unknown("probe feature", ft, sorted(set(train_f) & set(test_f)))
        check_split(train_f[ft], train_y, test_f[ft], test_y)
    if optimizer not in BASE_LR:
        raise unknown("probe optimizer", optimizer, BASE_LR)
    if epochs < 1 or batch_size < 1:
        raise ByonError(f"linear probe needs epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
    if train_y.shape[0] < 2:
        raise ByonError("linear probe needs at least 2 training rows (BatchNorm uses batch statistics)")
    C = count_classes(train_y, test_y, num_classes)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    modules = [probe_head(train_f[ft].shape[1], C, gen if i == 0 else torch.Generator().manual_seed(seed))
               for i, (ft, _) in enumerate(heads)]
    probes = nn.ModuleList(modules).to(device)
    groups = [{"params": h.parameters(), "lr": lr} for h, (_, lr) in zip(probes, heads)]
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    used = list(dict.fromkeys(ft for ft, _ in heads))
    x = {ft: train_f[ft].float().to(device) for ft in used}
    y = train_y.long().to(device)
    n = y.shape[0]
    # a last batch of one row would break BatchNorm's batch statistics: drop it (it is reshuffled anyway)
    steps_per_epoch = max(1, n // batch_size + int(n % batch_size > 1))
    total = epochs * steps_per_epoch
    with _single_thread(device):
        probes.train()
        step = 0
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros(len(heads), device=device)
            for i in range(steps_per_epoch):
                for group, (_, lr) in zip(opt.param_groups, heads):
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
                idx = perm[i * batch_size:(i + 1) * batch_size]
                batch = {ft: x[ft][idx] for ft in used}
                losses = torch.stack([F.cross_entropy(h(batch[ft]), y[idx]) for h, (ft, _) in zip(probes, heads)])
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # the heads share no parameters: each gets its own loss's gradient
                opt.step()
                loss_sum += losses.detach()
                step += 1
        probes.eval()
        ks = (1, 5) if C >= 5 else (1,)
        labels = test_y.long().to(device)
        out = []
        with torch.inference_mode():
            for h, (ft, lr), ls in zip(probes, heads, loss_sum.tolist()):
                hits = topk_accuracy(h(test_f[ft].float().to(device)), labels, ks)
                r = {"feature": ft, "lr": lr, "top1": 100.0 * hits[0] / labels.shape[0]}
                if C >= 5:
                    r["top5"] = 100.0 * hits[1] / labels.shape[0]
                out.append(r | {"train_loss": ls / steps_per_epoch})
    return out


# base lrs of the DINOv2-style grid (at batch 256, scaled linearly like BASE_LR); BatchNorm in front of every
# head makes the useful range narrower than DINOv2's 1e-5 … 0.1 for raw features
GRID_BLRS = (0.01, 0.03, 0.1, 0.3, 1.0)


def probe_grid(train_f: dict[str, Tensor], train_y: Tensor, test_f: dict[str, Tensor], test_y: Tensor,
               features: Sequence[str], blrs: Sequence[float] = GRID_BLRS, batch_size: int = 256,
               choose_on: int = 0, seed: int = 0, **kwargs) -> dict:
    """One `linear_heads` pass over the grid features × base lrs (lr = blr · batch_size / 256).

    Returns {"heads": [{"feature", "blr", "lr", "top1", ...}] scored on the test rows, "best": the chosen head's
    row, "best_per_feature": {feature: its chosen head's row}, "chosen_on"}. choose_on=0 picks the heads by
    their top-1 on the scored rows themselves (first on ties) — right when those are a val split, optimistic
    on test (DINOv2's ImageNet-val convention). choose_on=N > 0 never looks at the scored rows to choose: a
    second pass trains the same heads on the training rows minus N stratified held-out ones (seeded by `seed`),
    picks on those N, and "best" reports the picked head of the first pass ("choice": the held-out scores).
    """
    if not blrs or any(b <= 0 for b in blrs):
        raise ByonError(f"the probe grid needs positive base lrs, got {list(blrs)}")
    if not 0 <= choose_on < train_y.shape[0] - 1:
        raise ByonError(f"the probe grid holds out choose_on rows of the {train_y.shape[0]} training rows to "
                        f"pick its heads on; choose_on must be in [0, {train_y.shape[0] - 2}], got {choose_on}")
    grid = [(ft, blr) for ft in features for blr in blrs]
    spec = [(ft, blr * batch_size / 256) for ft, blr in grid]
    heads = linear_heads(train_f, train_y, test_f, test_y, spec, batch_size=batch_size, seed=seed, **kwargs)
    rows = [{"feature": ft, "blr": blr} | {k: v for k, v in h.items() if k != "feature"}
            for (ft, blr), h in zip(grid, heads)]
    scores, chosen_on = [r["top1"] for r in rows], "scored split"
    result: dict = {}
    if choose_on:
        held = subset_indices(train_y, train_y.shape[0], choose_on, seed)
        keep = torch.ones(train_y.shape[0], dtype=torch.bool)
        keep[held] = False
        fit = {ft: f[keep] for ft, f in train_f.items() if ft in features}
        pick = {ft: f[held] for ft, f in train_f.items() if ft in features}
        choice = linear_heads(fit, train_y[keep], pick, train_y[held], spec, batch_size=batch_size, seed=seed,
                              **kwargs)
        scores, chosen_on = [h["top1"] for h in choice], f"{choose_on} held-out training rows"
        result["choice"] = [{"feature": ft, "blr": blr, "top1": h["top1"]} for (ft, blr), h in zip(grid, choice)]
    best_per: dict[str, int] = {}
    for i, (ft, _) in enumerate(grid):
        if ft not in best_per or scores[i] > scores[best_per[ft]]:
            best_per[ft] = i
    best = max(range(len(rows)), key=lambda i: (scores[i], -i))
    return {"heads": rows, "best": rows[best], "best_per_feature": {ft: rows[i] for ft, i in best_per.items()},
            "chosen_on": chosen_on} | result
