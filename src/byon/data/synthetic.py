"""Procedural shapes and textures: ten balanced classes a tiny model can learn, made in a fraction of a second."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from byon.data.imagedata import ImageData

CLASSES = ["filled square", "outlined square", "filled circle", "ring", "triangle", "horizontal stripes",
           "vertical stripes", "diagonal stripes", "checkerboard", "cross"]
SIZES = {"train": 2000, "test": 500}
# Fixed per split (not the run seed) so that, like a real dataset, the images never change.
SPLIT_SEEDS = {"train": 0, "test": 1}


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    """(n, 1, 1) uniform in [lo, hi)."""
    return torch.rand(n, 1, 1, generator=g) * (hi - lo) + lo


def _masks(labels: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Soft foreground masks in [0, 1], (N, size, size), one shape/texture per label."""
    n = len(labels)
    s = _u(g, n, 0.2, 0.36) * size  # half-size of the shape
    cx = s + 1 + torch.rand(n, 1, 1, generator=g) * (size - 2 * s - 2)
    cy = s + 1 + torch.rand(n, 1, 1, generator=g) * (size - 2 * s - 2)
    period = _u(g, n, 3.5, 6.0) * size / 28
    phase = _u(g, n, 0.0, 2 * math.pi)
    thick = max(1.5, size / 14)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    # Signed distances (negative inside) turned into 1-pixel soft edges.
    edge = lambda d: (0.5 - d).clamp_(0, 1)
    out = torch.empty(n, size, size)
    for k in range(len(CLASSES)):
        i = (labels == k).nonzero().squeeze(1)
        if len(i) == 0:
            continue
        sk = s[i]
        x = coords.view(1, 1, -1) - cx[i]  # (m, 1, W)
        y = coords.view(1, -1, 1) - cy[i]  # (m, H, 1)
        if k in (0, 1):
            box = torch.maximum(x.abs(), y.abs()) - sk
            m = edge(box) if k == 0 else edge(box.abs() - thick / 2)
        elif k == 3:
            m = edge((torch.sqrt(x**2 + y**2) - sk).abs() - thick / 2)
        elif k == 4:  # apex up, base down: half-width grows from 0 to s
            m = edge(torch.maximum(y.abs() - sk, x.abs() - (y + sk) / 2))
        elif k == 9:
            arm = sk / 3
            m = edge(torch.minimum(torch.maximum(x.abs() - arm, y.abs() - sk),
                                   torch.maximum(y.abs() - arm, x.abs() - sk)))
        else:  # a disc, plain (2) or filled with a texture
            m = edge(torch.sqrt(x**2 + y**2) - sk)
            if k in (5, 6, 7):
                u = y if k == 5 else x if k == 6 else (x + y) / math.sqrt(2)
                m *= torch.sin(2 * math.pi * u / period[i] + phase[i]) > 0
            elif k == 8:
                p = period[i]
                m *= (torch.floor(x / p + 64) + torch.floor(y / p + 64)) % 2
        out[i] = m
    return out


def make_synthetic(n: int, seed: int, size: int = 28, channels: int = 1) -> tuple[Tensor, Tensor]:
    """uint8 (n, channels, size, size) images and int64 (n,) labels, exactly balanced over the 10 classes
    (up to n mod 10); the same (n, seed, size, channels) always gives the same images."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    mask = _masks(labels, size, g).unsqueeze(1)
    if channels == 1:
        fg = _u(g, n, 0.6, 1.0).unsqueeze(1)
        bg = _u(g, n, 0.0, 0.25).unsqueeze(1)
    else:
        # Random colours carry no class information, so only the shape does.
        fg = torch.rand(n, channels, 1, 1, generator=g) * 0.6 + 0.4
        bg = torch.rand(n, channels, 1, 1, generator=g) * 0.3
    noise = torch.randn(n, channels, size, size, generator=g) * 0.05
    x = bg + (fg - bg) * mask + noise
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def load_synthetic(name: str, split: str, image_size: int | None = None) -> ImageData:
    """'synthetic': 1 channel, 28 px; 'synthetic-rgb': 3 channels, 32 px; 2000 train / 500 test images."""
    rgb = name == "synthetic-rgb"
    size = image_size or (32 if rgb else 28)
    images, labels = make_synthetic(SIZES[split], SPLIT_SEEDS[split], size, 3 if rgb else 1)
    return ImageData(images, labels, list(CLASSES), name)


def write_jpeg_folder(root: str | Path, n: int, sizes: tuple[int, int] = (24, 40), classes: int = 3,
                      seed: int = 0, quality: int = 90) -> Path:
    """An image folder of n JPEGs for tests and `byon bench data`: image i in class folder `class{i % classes}`,
    each side drawn from `sizes` (inclusive), smooth colour fields (8 × 8 random colours upsampled, plus noise)
    that compress and decode like photographs rather than like white noise. The same arguments always write the
    same files."""
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(sizes[0], sizes[1] + 1, (2,), generator=g))
        coarse = torch.rand(1, 3, 8, 8, generator=g)
        x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        x = x + 0.04 * torch.randn(3, h, w, generator=g)
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(root / f"class{i % classes}" / f"{i:06d}.jpg", quality=quality)
    return root
