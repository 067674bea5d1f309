from __future__ import annotations

import pytest
import torch

from byon.config import DataConfig
from byon.data.transforms import (
    augment,
    color_jitter,
    denormalize,
    gaussian_blur,
    hflip,
    normalize,
    random_grayscale,
    random_resized_crop,
    solarize,
)
from byon.errors import ByonError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 6, c: int = 3, h: int = 12, w: int = 12) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(123))


def test_crop_identity_at_full_scale():
    x = batch()
    y = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen())
    assert torch.allclose(y, x, atol=1e-5)


def test_crop_shape_determinism_and_zoom():
    x = batch()
    a = random_resized_crop(x, (0.3, 0.6), generator=gen(1))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, random_resized_crop(x, (0.3, 0.6), generator=gen(1)))
    assert not torch.allclose(a, random_resized_crop(x, (0.3, 0.6), generator=gen(2)))
    assert not torch.allclose(a, x, atol=1e-2)
    assert random_resized_crop(x, generator=gen(), out_size=(5, 7)).shape == (6, 3, 5, 7)
    # Every image gets its own box: identical inputs give different crops.
    same = x[:1].expand(4, -1, -1, -1)
    out = random_resized_crop(same, (0.3, 0.6), generator=gen(3))
    assert not torch.allclose(out[0], out[1])


def test_crop_keeps_constant_images_constant():
    x = torch.full((4, 1, 9, 9), 0.7)
    y = random_resized_crop(x, (0.1, 0.5), generator=gen(), out_size=16)
    assert torch.allclose(y, torch.full_like(y, 0.7), atol=1e-6)  # no zero padding leaks in at the edges


def test_crop_of_a_known_box():
    """scale 0.25 and ratio 1 on a linear ramp gives a half-width ramp segment inside the image."""
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    y = random_resized_crop(ramp, (0.25, 0.25), (1.0, 1.0), generator=gen(), out_size=16)
    step = y[0, 0, 0, 1:] - y[0, 0, 0, :-1]
    assert torch.allclose(step[1:-1], torch.full_like(step[1:-1], 0.5), atol=1e-4)


def test_hflip():
    x = batch(b=64, c=1, h=2, w=3)
    assert torch.equal(hflip(x, p=1.0, generator=gen()), x.flip(-1))
    assert torch.equal(hflip(x, p=0.0, generator=gen()), x)
    y = hflip(x, 0.5, gen(4))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert torch.equal(y[~flipped], x[~flipped]) and 10 < int(flipped.sum()) < 54
    assert torch.equal(y, hflip(x, 0.5, gen(4)))


def test_normalize_roundtrip_and_channel_check():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=gen())
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    z = normalize(x, mean, std)
    assert z.dtype == torch.float32
    assert torch.allclose(z[:, 1], (x[:, 1].float() / 255 - 0.4) / 0.25)
    assert torch.allclose(denormalize(z, mean, std), x.float() / 255, atol=1e-6)
    with pytest.raises(ByonError, match="1 channel values"):
        normalize(x, (0.5,), (0.2,))


def test_augment_default_view():
    x = torch.randint(0, 256, (5, 1, 10, 10), dtype=torch.uint8, generator=gen())
    cfg = DataConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False)
    y = augment(x, cfg, (0.5,), (0.25,), gen())
    assert torch.allclose(y, normalize(x, (0.5,), (0.25,)), atol=1e-5)
    cfg = DataConfig()
    a, b = augment(x, cfg, (0.5,), (0.25,), gen(7)), augment(x, cfg, (0.5,), (0.25,), gen(7))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert augment(x, cfg, (0.5,), (0.25,), gen(7), out_size=8).shape == (5, 1, 8, 8)


def test_blur_solarize_jitter_grayscale():
    x = batch()
    assert torch.equal(gaussian_blur(x, p=0.0, generator=gen()), x)
    blurred = gaussian_blur(x, (1.0, 2.0), p=1.0, generator=gen())
    assert blurred.std() < x.std() * 0.7
    assert torch.allclose(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05)
    const = torch.full((2, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(const, p=1.0, generator=gen()), const, atol=1e-6)

    assert torch.equal(solarize(x, p=1.0, generator=gen()), torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(solarize(x, p=0.0, generator=gen()), x)

    assert torch.equal(color_jitter(x, p=0.0, generator=gen()), x)
    j = color_jitter(x, p=1.0, generator=gen())
    assert j.shape == x.shape and not torch.allclose(j, x) and j.min() >= 0 and j.max() <= 1
    gray = color_jitter(x[:, :1], brightness=0.0, contrast=0.0, saturation=0.9, p=1.0, generator=gen())
    assert torch.allclose(gray, x[:, :1])  # saturation is the identity on one channel

    g = random_grayscale(x, p=1.0, generator=gen())
    assert torch.allclose(g[:, 0], g[:, 2]) and not torch.allclose(g, x)
