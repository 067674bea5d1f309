"""Frozen-feature extraction in batches, and an on-disk cache keyed by what produced the features."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from byon.errors import ByonError
from byon.rundir import atomic_save

FeatureFn = Callable[[Tensor], dict[str, Tensor]]


def _channel_vector(values: Sequence[float] | Tensor, channels: int, name: str) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float32).flatten()
    if v.numel() == 1:
        v = v.expand(channels)
    if v.numel() != channels:
        raise ByonError(f"{name} has {v.numel()} values but the images have {channels} channels; "
                        f"pass one value per channel (the training split's channel_stats)")
    return v.view(1, channels, 1, 1)


def extract_features(fn: FeatureFn, images: Tensor, mean: Sequence[float] | Tensor,
                     std: Sequence[float] | Tensor, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Run `fn` on normalised batches of uint8 images (N, C, H, W) → {key: float32 CPU (N, ...)}.

    Each batch becomes `(x / 255 - mean) / std` per channel on `device`; `fn` runs under inference mode
    (put modules in eval mode first). Every call of `fn` must return the same keys.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ByonError(f"extract_features expects uint8 images (N, C, H, W), got {images.dtype} "
                        f"{tuple(images.shape)}")
    if batch_size < 1:
        raise ByonError(f"batch_size must be >= 1, got {batch_size}")
    m = _channel_vector(mean, images.shape[1], "mean").to(device)
    s = _channel_vector(std, images.shape[1], "std").to(device)
    parts: dict[str, list[Tensor]] = {}
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True).float().div_(255)
            out = fn((x - m) / s)
            if parts and out.keys() != parts.keys():
                raise ByonError(f"the feature function returned keys {sorted(out)} after {sorted(parts)}; "
                                f"it must return the same keys for every batch")
            for key, value in out.items():
                parts.setdefault(key, []).append(value.detach().float().cpu())
    if not parts:
        raise ByonError("extract_features got no images (N = 0)")
    return {key: torch.cat(chunks) for key, chunks in parts.items()}


def last_blocks_cls(encoder: torch.nn.Module, n: int) -> FeatureFn:
    """DINOv2's multi-block feature: {f'cls{n}': (B, n·D)}, the CLS token after each of the encoder's last n
    blocks, each through the final norm (as the last block's output is), concatenated oldest block first.

    `encoder` is a `ViTEncoder` (its `embed` / `forward_tokens` hooks); n is capped at its depth. An encoder
    without a CLS token contributes each block's normed, mean-pooled patch tokens instead.
    """
    depth = len(encoder.blocks)
    if n < 1:
        raise ByonError(f"the number of last blocks must be >= 1, got {n}")
    n = min(n, depth)
    layers = list(range(depth - n, depth))

    def fn(images: Tensor) -> dict[str, Tensor]:
        _, inter, _ = encoder.forward_tokens(encoder.embed(images), return_layers=layers, norm=False)
        if getattr(encoder, "cls_token", None) is None:  # no CLS (I-JEPA): each block's mean patch token
            return {f"cls{n}": torch.cat([encoder.norm(inter[i]).mean(dim=1) for i in layers], dim=1)}
        return {f"cls{n}": torch.cat([encoder.norm(inter[i][:, 0]) for i in layers], dim=1)}

    return fn


def cached_features(path: Path, key: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Features stored at `path` when they were saved under `key`; else `compute()`, save, return them.

    `key` should name everything the features depend on (checkpoint, dataset, split, preprocessing).
    The file is replaced atomically, so a crash never leaves a half-written cache behind.
    """
    path = Path(path)
    if path.exists():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError):
            stored = None  # unreadable (e.g. written by a newer torch): the cache is rebuildable
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["features"]
    features = compute()
    # clone: a view of a larger tensor would otherwise save its whole storage
    features = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in features.items()}
    atomic_save({"key": key, "features": features}, path)
    return features
