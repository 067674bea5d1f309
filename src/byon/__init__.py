"""byon: denoising-based self-supervised pretraining of Vision Transformers."""

from __future__ import annotations

__version__ = "0.1.0"


def load_encoder(run_dir: str, ema: bool = False):
    """The trained encoder of a run directory, ready for `.features(images)` or timm use."""
    from byon.engine.run import load_run

    _, method = load_run(run_dir)
    if ema:
        target = getattr(method, "target_encoder", None)
        if target is None:
            from byon.errors import ByonError

            raise ByonError(f"the '{type(method).__name__}' method keeps no EMA encoder; drop ema=True")
        return target.eval()
    return method.eval_encoder().eval()
