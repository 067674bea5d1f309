from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from byon.errors import ByonError
from byon.eval.features import cached_features, extract_features, last_blocks_cls
from byon.nn.vit import EncoderShape, ViTEncoder


def _images(n: int = 13) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 2, 4, 4), generator=g, dtype=torch.uint8)


def _fn(x: Tensor) -> dict[str, Tensor]:
    # a per-row nonlinearity with a cross-row-independent reduction, as a real encoder would be
    return {"cls": x.flatten(1).tanh() @ torch.ones(32, 3, dtype=x.dtype), "mean": x.mean((2, 3))}


def test_normalisation_per_channel() -> None:
    images = _images()
    mean, std = [0.25, 0.5], [0.5, 2.0]
    out = extract_features(lambda x: {"x": x}, images, mean, std, batch_size=5)["x"]
    expect = (images.float() / 255 - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, expect)


def test_batched_equals_unbatched() -> None:
    images = _images()
    whole = extract_features(_fn, images, [0.5, 0.5], [0.25, 0.25], batch_size=100)
    batched = extract_features(_fn, images, [0.5, 0.5], [0.25, 0.25], batch_size=4)
    assert whole.keys() == {"cls", "mean"} and whole["cls"].shape == (13, 3)
    for key in whole:
        torch.testing.assert_close(batched[key], whole[key])


def test_runs_under_inference_mode_and_returns_float32() -> None:
    seen = []

    def fn(x: Tensor) -> dict[str, Tensor]:
        seen.append(torch.is_inference_mode_enabled())
        return {"f": x.double().flatten(1)}

    out = extract_features(fn, _images(6), [0.0], [1.0], batch_size=4)  # one value broadcasts
    assert seen == [True, True]
    assert out["f"].dtype == torch.float32


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ByonError):
        extract_features(_fn, _images().float(), [0.5, 0.5], [0.2, 0.2])
    with pytest.raises(ByonError):
        extract_features(_fn, _images(), [0.5, 0.5, 0.5], [0.2, 0.2])


def test_cache_recomputes_only_on_key_change(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "feats.pt"
    calls = []

    def compute() -> dict[str, Tensor]:
        calls.append(1)
        return {"cls": torch.full((3, 2), float(len(calls)))}

    first = cached_features(path, "ckpt-a", compute)
    again = cached_features(path, "ckpt-a", compute)
    assert len(calls) == 1
    torch.testing.assert_close(again["cls"], first["cls"])
    changed = cached_features(path, "ckpt-b", compute)
    assert len(calls) == 2 and float(changed["cls"][0, 0]) == 2.0
    assert float(cached_features(path, "ckpt-b", compute)["cls"][0, 0]) == 2.0 and len(calls) == 2
    assert [p.name for p in path.parent.iterdir()] == ["feats.pt"]  # no temporary files left behind


def test_cache_survives_a_corrupt_file_and_a_failed_compute(tmp_path: Path) -> None:
    path = tmp_path / "feats.pt"
    path.write_bytes(b"not a torch file")
    out = cached_features(path, "k", lambda: {"f": torch.ones(2)})
    assert torch.equal(out["f"], torch.ones(2))

    def boom() -> dict[str, Tensor]:
        raise RuntimeError("extraction failed")

    with pytest.raises(RuntimeError):
        cached_features(path, "other", boom)
    assert torch.equal(cached_features(path, "k", boom)["f"], torch.ones(2))  # old cache intact


def test_last_blocks_cls_is_each_blocks_normed_cls_and_ends_with_the_final_cls() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder(EncoderShape(img_size=8, in_chans=1, patch_size=4, embed_dim=8, depth=3, num_heads=2,
                                  mlp_ratio=2.0)).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        out = last_blocks_cls(enc, 2)(x)
        assert out.keys() == {"cls2"} and out["cls2"].shape == (5, 16)
        torch.testing.assert_close(out["cls2"][:, 8:], enc.features(x)["cls"])  # the last block's = final cls
        block1 = enc.blocks[1](enc.blocks[0](enc.embed(x)))
        torch.testing.assert_close(out["cls2"][:, :8], enc.norm(block1)[:, 0])
        assert last_blocks_cls(enc, 9)(x).keys() == {"cls3"}  # capped at the depth
    with pytest.raises(ByonError):
        last_blocks_cls(enc, 0)


def test_last_blocks_feature_of_an_encoder_without_cls_is_the_mean_patch_token() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder(EncoderShape(img_size=8, in_chans=1, patch_size=4, embed_dim=8, depth=3, num_heads=2,
                                  mlp_ratio=2.0), class_token=False).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        out = last_blocks_cls(enc, 2)(x)["cls2"]
        torch.testing.assert_close(out[:, 8:], enc.features(x)["mean"])
