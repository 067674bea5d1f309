"""byon: denoising-based self-supervised pretraining of Vision Transformers."""

from __future__ import annotations

__version__ = "0.1.0"


def load_encoder(run_dir: str, ema: bool = False, encoder: str | None = None, checkpoint: str | None = None):
    """The trained encoder of a run directory (eval mode, CPU): a `ViTEncoder`, i.e. a timm
    `VisionTransformer` with `.features(images) -> {"cls": (B, D), "mean": (B, D)}` for normalised
    (B, C, H, W) images. ema=True (or encoder="ema") gives the EMA/target encoder of the methods that keep one
    (BYON, BYOL, I-JEPA, N-JEPA), encoder="online" their online one; by default the method's eval encoder.
    checkpoint: 'last', 'epoch-N' or a .ckpt path (default: the run's newest)."""
    from byon.export import select_encoder
    from byon.rundir import load_run

    _, method = load_run(run_dir, checkpoint=checkpoint)
    enc = select_encoder(method, ema, encoder)
    enc.data_info = method.info  # the input normalisation (mean, std) and image size
    return enc.eval()
