"""Disruption loss — the feature-noise MIM study (papers/mim-denoising-study-2412.19104.txt, "explicit
disentanglement between noised and masked tokens"; spec/baselines.md, feature-noise MIM).

A variant of masked-token optimisation: it suppresses the attention between two token groups. For a layer's
row-stochastic attention A (B, H, L, L), the mass that a-queries put on b-keys is m_{a→b} = Σ_{j∈b} A_ij,
averaged over the heads and over the a-queries of the batch; the loss is ½(m_{a→b} + m_{b→a}) averaged over
the given layers. It lies in [0, 1] and is zero exactly when no attention flows between the groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from byon.corruption.masking import masked_mean


def attention_mass(attn: Tensor, queries: Tensor, keys: Tensor) -> Tensor:
    """attn: (B, H, L, L); queries, keys: (B, L) bool → mean over heads and query tokens of Σ_{j∈keys} A_ij."""
    per_query = (attn.float() * keys[:, None, None, :].float()).sum(dim=-1).mean(dim=1)  # (B, L)
    return masked_mean(per_query, queries)


def disruption_loss(attn: Sequence[Tensor], a: Tensor, b: Tensor) -> Tensor:
    """attn: one (B, H, L, L) attention per layer; a, b: (B, L) bool groups (e.g. noised, masked) over the
    same L tokens (CLS included as False). Scalar; 0 when `attn` is empty."""
    if len(attn) == 0:
        return torch.zeros((), device=a.device)
    return torch.stack([(attention_mass(A, a, b) + attention_mass(A, b, a)) / 2 for A in attn]).mean()


__all__ = ["attention_mass", "disruption_loss"]
