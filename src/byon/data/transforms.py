"""Batched image augmentation on tensors, on the batch's device.

Every random draw uses the explicit `generator` (CPU or CUDA, matching the batch's device), so a view
depends only on the generator's state; in training it is a `byon.draws.SampleDraws`, so each image's draws
depend only on its position in the global batch. The image operations have no per-image Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from byon.config import DataConfig
from byon.draws import Draw, rand
from byon.errors import ByonError

LUMA = (0.299, 0.587, 0.114)


def _channel_vec(values: Sequence[float] | Tensor, x: Tensor, what: str) -> Tensor:
    """(C, 1, 1) float32 on x's device; len(values) must match x's channel dim (-3). A tensor already on the
    device is used as it is: building one from numbers is a blocking host-to-device copy (a sync per step)."""
    n = values.numel() if torch.is_tensor(values) else len(values)
    if n != x.shape[-3]:
        raise ByonError(f"{what} has {n} channel values but the images have {x.shape[-3]} channels")
    if torch.is_tensor(values):
        return values.to(device=x.device, dtype=torch.float32).view(-1, 1, 1)
    return torch.tensor(list(values), dtype=torch.float32, device=x.device).view(-1, 1, 1)


def _rand(x: Tensor, generator: Draw, k: int | None = None) -> Tensor:
    """(B,) uniform [0, 1) float32 on x's device, or (B, k); per sample (`byon.draws`)."""
    return rand(generator, x.shape[0], *(() if k is None else (k,)), device=x.device)


def _per_image(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (…, C, H, W) → float32 (x/255 − mean) / std, per channel."""
    m, s = _channel_vec(mean, x, "mean"), _channel_vec(std, x, "std")
    return (x.to(torch.float32) / 255 - m) / s


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Inverse of `normalize`, in [0, 1] units (float, not clamped)."""
    m, s = _channel_vec(mean, x, "mean"), _channel_vec(std, x, "std")
    return x.to(torch.float32) * s + m


def random_resized_crop(x: Tensor, scale: tuple[float, float] = (0.6, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: Draw = None,
                        out_size: int | tuple[int, int] | None = None) -> Tensor:
    """Float (B, C, H, W) → (B, C, h, w) (out_size, default H×W). Per image: area fraction ~ U(scale),
    aspect w/h log-uniform in ratio (like torchvision), crop sides clamped to the image, position uniform;
    resampled bilinearly with one affine grid (sub-pixel crop boxes, no rounding)."""
    if not x.is_floating_point():
        raise ByonError(f"random_resized_crop needs float images, got {x.dtype}; normalise them first")
    b, _, h, w = x.shape
    oh, ow = (h, w) if out_size is None else (out_size, out_size) if isinstance(out_size, int) else out_size
    u = rand(generator, b, 4, device=x.device, dtype=torch.float32)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    cw = torch.sqrt(area * aspect).clamp(max=w)
    ch = torch.sqrt(area / aspect).clamp(max=h)
    x0 = (w - cw) * u[:, 2]
    y0 = (h - ch) * u[:, 3]
    # Normalised coords (align_corners=False): −1 and +1 are the outer pixel edges, so the box
    # [x0, x0 + cw] maps to centre 2(x0 + cw/2)/W − 1 and half-extent cw/W.
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = 2 * (x0 + cw / 2) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = 2 * (y0 + ch / 2) / h - 1
    grid = F.affine_grid(theta, [b, x.shape[1], oh, ow], align_corners=False).to(x.dtype)
    # "border": samples between the last pixel centre and the image edge must not blend in zeros.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def hflip(x: Tensor, p: float = 0.5, generator: Draw = None) -> Tensor:
    """(B, C, H, W), any dtype: each image mirrored left-right with probability p."""
    flip = _rand(x, generator) < p
    return torch.where(_per_image(flip), x.flip(-1), x)


def gaussian_blur(x: Tensor, sigma_range: tuple[float, float] = (0.1, 2.0), p: float = 0.5,
                  generator: Draw = None) -> Tensor:
    """Float (B, C, H, W): with probability p per image, a separable Gaussian blur with sigma ~ U(range)
    (kernel radius ⌈3·sigma_max⌉, reflect padding)."""
    b, c, h, w = x.shape
    u = _rand(x, generator, 2)
    apply, sigma = u[:, 0] < p, sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u[:, 1]
    radius = max(1, min(math.ceil(3 * sigma_range[1]), h - 1, w - 1))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(c, 0)  # (B·C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return torch.where(_per_image(apply), y.view(b, c, h, w), x)


def solarize(x: Tensor, p: float = 0.2, generator: Draw = None,
             threshold: float = 0.5) -> Tensor:
    """[0, 1] float (B, C, H, W): with probability p per image, pixels ≥ threshold become 1 − x."""
    apply = _per_image(_rand(x, generator) < p)
    return torch.where(apply & (x >= threshold), 1 - x, x)


def _gray(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of (B, C, H, W); the image itself when C = 1."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def color_jitter(x: Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 p: float = 0.8, generator: Draw = None) -> Tensor:
    """[0, 1] float (B, C, H, W): with probability p per image, brightness, contrast and saturation
    factors ~ U(1 − s, 1 + s) applied in that order (clamped to [0, 1] after each, like torchvision);
    saturation is the identity for 1-channel images."""
    u = _rand(x, generator, 4).T
    factor = lambda strength, v: _per_image(1 + strength * (2 * v - 1)).to(x.dtype)
    y = (x * factor(brightness, u[1])).clamp(0, 1)
    m = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - m) * factor(contrast, u[2]) + m).clamp(0, 1)
    if y.shape[1] == 3:
        g = _gray(y)
        y = ((y - g) * factor(saturation, u[3]) + g).clamp(0, 1)
    return torch.where(_per_image(u[0] < p), y, x)


def random_grayscale(x: Tensor, p: float = 0.2, generator: Draw = None) -> Tensor:
    """[0, 1] float (B, C, H, W): with probability p per image, every channel replaced by the luma."""
    apply = _per_image(_rand(x, generator) < p)
    return torch.where(apply, _gray(x).expand_as(x), x)


def augment(x: Tensor, cfg: DataConfig, mean: Sequence[float], std: Sequence[float],
            generator: Draw = None, out_size: int | None = None, crop: bool = True) -> Tensor:
    """The default pretraining view: uint8 (B, C, H, W) → random resized crop (cfg.crop_scale,
    cfg.crop_ratio) → horizontal flip (when cfg.hflip) → normalised float32 (B, C, out, out). crop=False: the
    images were cropped when decoded (streamed data), so only the flip and the normalisation remain."""
    v = x.to(torch.float32) / 255
    if crop:
        v = random_resized_crop(v, tuple(cfg.crop_scale), tuple(cfg.crop_ratio), generator, out_size)
    if cfg.hflip:
        v = hflip(v, 0.5, generator)
    return (v - _channel_vec(mean, v, "mean")) / _channel_vec(std, v, "std")
