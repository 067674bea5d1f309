"""Random token masking (MAE): argsort of per-image uniform noise, exact keep count."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byon.errors import ByonError


@dataclass
class TokenMask:
    """ids_keep: (B, K) kept token indices (in shuffled order); ids_restore: (B, N) inverse permutation;
    mask: (B, N) bool, True = masked (removed / replaced), False = visible."""

    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor

    @property
    def num_keep(self) -> int:
        return self.ids_keep.shape[1]


def check_ratio(ratio: float, name: str = "mask_ratio") -> None:
    if not 0.0 <= ratio < 1.0:
        raise ByonError(f"{name} must be in [0, 1), got {ratio}; e.g. 0.75 masks three patches in four")


def random_masking(batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> TokenMask:
    """Mask `int(N·ratio)`… precisely: keep `int(N·(1−ratio))` tokens per image, chosen uniformly."""
    check_ratio(ratio)
    keep = int(num_tokens * (1 - ratio))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
    mask[:, :keep] = False
    mask = torch.gather(mask, 1, ids_restore)
    return TokenMask(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """x: (B, N, D), ids: (B, K) → (B, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restore_tokens(kept: Tensor, mask_token: Tensor, ids_restore: Tensor) -> Tensor:
    """Append mask tokens after the kept ones and unshuffle. kept: (B, K, D) → (B, N, D)."""
    B, K, D = kept.shape
    N = ids_restore.shape[1]
    fill = mask_token.to(kept.dtype).expand(B, N - K, D)
    return gather_tokens(torch.cat([kept, fill], dim=1), ids_restore)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-token values (B, N) over tokens where mask (B, N) is True; 0 when none are."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)
