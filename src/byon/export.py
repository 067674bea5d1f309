"""Getting an encoder out of a run: timm-layout safetensors + JSON, and embeddings of any image folder.

`ViTEncoder`'s state dict is exactly timm's `VisionTransformer` layout, so the exported file loads with
`strict=True` into `VisionTransformer(**json["timm_kwargs"], num_classes=0)`, whose `forward(x)` is the
CLS feature and `forward_features(x)[:, 1:].mean(1)` the mean-of-patches feature.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from byon.data.imagefolder import BAD_FILE, EXTENSIONS, _images_in, _read, read_images
from byon.errors import ByonError, unknown
from byon.eval.features import extract_features
from byon.nn.denoiser import has_dit_blocks
from byon.rundir import atomic_write, find_checkpoint, load_run, pick_device, write_json

log = logging.getLogger(__name__)

FEATURES = ("cls", "mean")
FORMAT = "byon-encoder/1"


ENCODERS = ("online", "ema")


def select_encoder(method: nn.Module, ema: bool = False, encoder: str | None = None) -> nn.Module:
    """The method's eval encoder (None); with encoder='ema' (or ema=True) its EMA/target encoder, with
    encoder='online' its online (student / context) one — for the methods that keep both (BYON, BYOL, I-JEPA,
    N-JEPA), whose default is one of the two (online for BYON and BYOL, the target for I-JEPA and N-JEPA)."""
    which = "ema" if ema else encoder
    if which is None:
        return method.eval_encoder()
    if which not in ENCODERS:
        raise unknown("encoder", which, ENCODERS)
    target = method.ema_encoder()
    if target is None:
        drop = "--ema / ema=True" if which == "ema" else "--encoder"
        raise ByonError(f"the '{type(method).__name__}' method keeps no EMA (target) encoder beside its online "
                        f"one; drop {drop} to use its eval encoder")
    return target if which == "ema" else method.encoder


def timm_kwargs(encoder: nn.Module) -> dict[str, Any]:
    """`timm.models.vision_transformer.VisionTransformer` constructor kwargs of the same architecture
    (without num_classes: pass num_classes=0 for features)."""
    s = encoder.shape
    return {"img_size": s.img_size, "patch_size": s.patch_size, "in_chans": s.in_chans, "embed_dim": s.embed_dim,
            "depth": s.depth, "num_heads": s.num_heads, "mlp_ratio": s.mlp_ratio, "qkv_bias": True,
            "class_token": encoder.cls_token is not None,
            **({"global_pool": "token"} if encoder.cls_token is not None  # no CLS (I-JEPA): mean-pooled,
               else {"global_pool": "avg", "fc_norm": False})}            # the final norm per token


def export_encoder(run_dir: str | Path, out: str | Path, ema: bool = False, encoder: str | None = None,
                   checkpoint: str | None = None) -> tuple[Path, Path]:
    """Write the run's encoder (`select_encoder`) as `out` (.safetensors, timm key layout) and `out` with .json
    (architecture, input normalisation, provenance). Returns both paths. `checkpoint`: which of the run's
    checkpoints (`rundir.find_checkpoint`; default the newest)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ByonError(f"--out '{out}' must end in .safetensors")
    run_dir = Path(run_dir)
    cfg, method = load_run(run_dir, checkpoint=checkpoint)
    which = "ema" if ema else encoder
    enc = select_encoder(method, encoder=which)
    if has_dit_blocks(enc):
        raise ByonError(f"the run's encoder is cut after block {len(enc.blocks)}, in the DiT's decoder half, whose "
                        f"blocks use tanh-GELU; a timm VisionTransformer has one activation for all blocks, so it "
                        f"cannot be exported (evaluate it in byon, or set ddae.feature_block within the encoder half)")
    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    info = method.info
    kwargs = timm_kwargs(enc)
    meta = {
        "format": FORMAT, **{k: kwargs[k] for k in ("img_size", "patch_size", "in_chans", "embed_dim", "depth",
                                                       "num_heads", "mlp_ratio", "class_token", "global_pool")},
        "timm_class": "timm.models.vision_transformer.VisionTransformer", "timm_kwargs": kwargs,
        "features": {"cls": "model(x) = forward_features(x)[:, 0]", "mean": "forward_features(x)[:, 1:].mean(1)",
                     "default": method.default_feature} if kwargs["class_token"] else
                    {"cls": "model(x) = forward_features(x).mean(1) (no CLS token)",
                     "mean": "forward_features(x).mean(1)",
                     "default": method.default_feature},
        "input": {"dtype": "float32 (B, C, H, W)", "normalize": "(x_uint8 / 255 - mean) / std",
                  "mean": list(info.mean), "std": list(info.std)},
        "method": cfg.method, "ema": which == "ema", "encoder": which or "default", "dataset": info.name,
        "source_run": str(run_dir.resolve()), "checkpoint": str(find_checkpoint(run_dir, checkpoint).name),
    }
    json_path = out.with_suffix(".json")
    atomic_write(out, lambda f: f.write(save_safetensors(state, metadata={"format": FORMAT, "method": cfg.method})))
    write_json(json_path, meta)
    return out, json_path


def _to_channels(a: np.ndarray, chans: int) -> np.ndarray:
    """(H, W) gray or (H, W, 3) RGB uint8 → (chans, H, W); RGB → gray with PIL's 'L' weights."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == chans:
        return a.transpose(2, 0, 1)
    if chans == 3:
        return np.repeat(a, 3, axis=2).transpose(2, 0, 1)
    weights = np.array([19595, 38470, 7471], dtype=np.uint32)  # ITU-R 601-2 luma, fixed point as in PIL
    gray = (a.astype(np.uint32) @ weights + 0x8000) >> 16
    return gray.astype(np.uint8)[None]


def read_image_folder(folder: str | Path, size: int, chans: int, on_bad_file: str = "fail"
                      ) -> tuple[torch.Tensor, list[str]]:
    """Every image under `folder` (recursively, sorted) as uint8 (N, chans, size, size) — resized (shorter
    side, centre crop) and converted to `chans` — and their paths relative to `folder`."""
    if on_bad_file not in BAD_FILE:
        raise unknown("on_bad_file value", on_bad_file, BAD_FILE)
    if chans not in (1, 3):
        raise ByonError(f"the encoder takes {chans} channels; image folders give 1 (gray) or 3 (RGB)")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ByonError(f"image folder '{folder}' does not exist or is not a folder; pass --images DIR")
    files = _images_in(folder, recursive=True)
    if not files:
        raise ByonError(f"image folder '{folder}' holds no images ({', '.join(sorted(EXTENSIONS))}), neither "
                        f"directly nor in sub-folders")
    arrays, keep = read_images(files, lambda path: _to_channels(_read(path, size), chans), folder, on_bad_file,
                               "--on-bad-file skip")
    names = [str(files[i].relative_to(folder)) for i in keep]
    return torch.from_numpy(np.stack(arrays)), names


def embed_folder(run_dir: str | Path, images: str | Path, out: str | Path, feature: str | None = None,
                 ema: bool = False, batch_size: int = 256, device: str | None = None,
                 on_bad_file: str = "fail", encoder: str | None = None, checkpoint: str | None = None
                 ) -> tuple[Path, Path, int]:
    """Features of every image under `images` → `out` (.npy, float32 (N, D)) and `out` with .txt (one
    relative path per row). feature: 'cls' | 'mean' (default: the method's). Returns (npy, txt, N)."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ByonError(f"--out '{out}' must end in .npy")
    if batch_size < 1:
        raise ByonError(f"--batch-size must be at least 1, got {batch_size}")
    cfg, method = load_run(run_dir, checkpoint=checkpoint)
    feature = feature or method.default_feature
    if feature not in FEATURES:
        raise unknown("feature", feature, FEATURES)
    enc = select_encoder(method, ema, encoder)
    info = method.info
    x, names = read_image_folder(images, info.img_size, info.in_chans, on_bad_file)
    device = pick_device(device)
    enc = enc.to(device).eval()
    feats = extract_features(enc.features, x, info.mean, info.std, batch_size=batch_size, device=device)
    array = feats[feature].numpy().astype(np.float32)
    txt = out.with_suffix(".txt")
    atomic_write(out, lambda f: np.save(f, array))
    atomic_write(txt, lambda f: f.write("".join(n + "\n" for n in names).encode()))
    return out, txt, len(names)


__all__ = ["ENCODERS", "embed_folder", "export_encoder", "read_image_folder", "select_encoder", "timm_kwargs"]
