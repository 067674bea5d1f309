"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / DINO protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from byon.errors import ByonError


def check_split(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor) -> None:
    """Raise a ByonError unless features are (N, D) with matching D and one label per row."""
    for name, f, y in (("train", train_f, train_y), ("test", test_f, test_y)):
        if f.dim() != 2 or y.dim() != 1 or f.shape[0] != y.shape[0] or f.shape[0] == 0:
            raise ByonError(f"{name} features must be (N, D) with N > 0 and labels (N,), got "
                            f"{tuple(f.shape)} and {tuple(y.shape)}")
    if train_f.shape[1] != test_f.shape[1]:
        raise ByonError(f"train and test features differ in width: {train_f.shape[1]} vs {test_f.shape[1]}")


def count_classes(train_y: Tensor, test_y: Tensor, num_classes: int | None) -> int:
    found = int(max(train_y.max(), test_y.max())) + 1
    if num_classes is None:
        return found
    if num_classes < found:
        raise ByonError(f"num_classes={num_classes} but the labels go up to {found - 1}")
    return num_classes


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...]) -> list[int]:
    """Number of rows whose label is among the top-k scores, per k. scores: (B, C), labels: (B,)."""
    top = scores.topk(max(ks), dim=1).indices
    hit = top == labels.unsqueeze(1)
    return [int(hit[:, :k].any(dim=1).sum()) for k in ks]


def knn_classify(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> dict:
    """Cosine kNN with votes weighted by exp(sim / T). Features (N, D), labels int (N,).

    Returns {"top1", "top5" (when ≥ 5 classes), "k", "temperature"}, accuracies in percent; k is capped
    at the number of training rows. Test rows are processed `chunk` at a time, so memory is
    O(chunk · N_train).
    """
    check_split(train_f, train_y, test_f, test_y)
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ByonError(f"kNN needs k >= 1, temperature > 0 and chunk >= 1, got k={k}, "
                        f"temperature={temperature}, chunk={chunk}")
    C = count_classes(train_y, test_y, num_classes)
    k = min(k, train_f.shape[0])
    ks = (1, 5) if C >= 5 else (1,)
    train = F.normalize(train_f.float(), dim=1)
    train_y = train_y.long().to(train.device)
    hits = [0] * len(ks)
    # one reused (chunk, N) buffer: fresh allocations of this size cost as much as the matmul in page faults
    buf = torch.empty(min(chunk, test_f.shape[0]), train.shape[0], device=train.device)
    for start in range(0, test_f.shape[0], chunk):
        query = F.normalize(test_f[start:start + chunk].float().to(train.device), dim=1)
        sim_all = torch.mm(query, train.T, out=buf[:query.shape[0]])
        sim, idx = sim_all.topk(k, dim=1)  # (B, k), sorted, largest first
        # subtracting the row max leaves the vote ranking unchanged and keeps exp finite for small T
        weight = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(query.shape[0], C, device=train.device)
        votes.scatter_add_(1, train_y[idx], weight)
        labels = test_y[start:start + chunk].long().to(train.device)
        hits = [h + n for h, n in zip(hits, topk_accuracy(votes, labels, ks))]
    n = test_f.shape[0]
    out = {"top1": 100.0 * hits[0] / n}
    if C >= 5:
        out["top5"] = 100.0 * hits[1] / n
    return out | {"k": k, "temperature": temperature}
