"""Random token masking (MAE): argsort of per-image uniform noise, exact keep count."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byon.draws import Draw, rand
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


def random_masking(batch: int, num_tokens: int, ratio: float, generator: Draw = None,
                   device: torch.device | str = "cpu") -> TokenMask:
    """Mask `int(N·ratio)`… precisely: keep `int(N·(1−ratio))` tokens per image, chosen uniformly."""
    check_ratio(ratio)
    keep = int(num_tokens * (1 - ratio))
    noise = rand(generator, batch, num_tokens, device=device)
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


def block_masking(batch: int, grid: int, block: int, ratio: float, generator: Draw = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """SimMIM's mask generator on a grid × grid token map → (B, grid²) bool, True = masked.

    The map is tiled by G × G mask-patches of block × block tokens (G = ceil(grid / block); patches overhanging
    the edge are cropped); as in `random_masking`, int(G²·(1 − ratio)) of them stay visible and the rest are
    masked. block = 1 is random token masking and gives exactly `random_masking(...).mask` for the same draw.
    """
    check_ratio(ratio)
    if block < 1:
        raise ByonError(f"mask-patch size must be at least 1 token, got {block}")
    G = -(-grid // block)
    keep = int(G * G * (1 - ratio))
    noise = rand(generator, batch, G * G, device=device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # the patches with the `keep` smallest draws stay visible
    mask = (rank >= keep).view(batch, G, G)
    mask = mask.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)[:, :grid, :grid]
    return mask.reshape(batch, grid * grid)


def token_mask(mask: Tensor) -> TokenMask:
    """The TokenMask of a given (B, N) bool mask (True = masked) with the same number of visible tokens in every
    image; ids_keep lists the visible tokens in ascending order."""
    keep = (~mask).sum(dim=1)
    if keep.numel() and not bool((keep == keep[0]).all()):
        raise ValueError("token_mask needs the same number of visible tokens in every image")
    ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # visible first, each in index order
    K = int(keep[0]) if keep.numel() else 0
    return TokenMask(ids_keep=ids_shuffle[:, :K], ids_restore=torch.argsort(ids_shuffle, dim=1), mask=mask)
