"""What the method tests share: a tiny model of a method, a seeded step context, synthetic batches, and the
checks every method's training step must pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from byon.config import DataConfig, RunConfig
from byon.data import DataInfo
from byon.methods import build_config, build_method, load_config
from byon.methods.context import StepContext, step_context

INFO = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))
RGB = DataInfo(name="synthetic", img_size=28, in_chans=3, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {"model": {"preset": "vit-test"}}
Batch = dict[str, Tensor]  # a step's input or output


def method_from(cfg: RunConfig, seed: int = 0, info: DataInfo = INFO) -> nn.Module:
    """The method of a loaded config, its weights drawn after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return build_method(cfg, info)[0]


def make_method(name: str, seed: int = 0, info: DataInfo = INFO, model: dict | None = None, **section) -> nn.Module:
    """The `vit-test` model of method `name` with its YAML section `section` (and `model` overrides)."""
    cfg = load_config(None, {"method": name, "model": TINY["model"] | (model or {}), name: section})
    return method_from(cfg, seed, info)


def step_ctx(seed: int = 0, progress: float = 0.0, data: DataConfig | None = None, info: DataInfo = INFO
             ) -> StepContext:
    """A step's context with the run's augmentation `data` (default: DataConfig()) normalised with `info`."""
    ctx = step_context(data or DataConfig(), info.mean, info.std, torch.Generator().manual_seed(seed))
    ctx.progress = progress
    return ctx


def rand_images(B: int = 4, seed: int = 0, C: int = 1) -> Tensor:
    """Standard-normal (B, C, 28, 28) "normalised images"."""
    return torch.randn(B, C, 28, 28, generator=torch.Generator().manual_seed(seed))


def rand_batch(B: int = 4, seed: int = 0, C: int = 1) -> Batch:
    """A training batch of random uint8 images: "raw" (B, C, 28, 28), "image" normalised with INFO's mean/std."""
    raw = torch.randint(0, 256, (B, C, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return {"image": (raw.float() / 255 - 0.5) / 0.25, "raw": raw, "label": torch.zeros(B, dtype=torch.long)}


def check_step(model: nn.Module, out: Batch) -> None:
    """One step's output: a finite loss with a graph, every other entry a detached scalar (what the engine logs);
    run its backward and assert that it reaches every trainable parameter (DDP without find_unused_parameters
    needs that)."""
    # (pytest does not rewrite the asserts of a helper module: the messages say what failed)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad, f"loss {out['loss']}"
    bad = [k for k, v in out.items() if k != "loss" and (v.requires_grad or v.numel() != 1)]
    assert bad == [], f"logs that are not detached scalars: {bad}"
    out["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [], f"parameters the loss does not reach: {unused}"


def assert_trains_every_parameter(model: nn.Module, batch_fn: Callable[[], Batch], steps: int = 4, lr: float = 1e-3,
                                  after_step: Callable[[Batch], Any] | None = None) -> list[float]:
    """`steps` AdamW steps on batch_fn(), each with `step_ctx()` and checked by `check_step`; after_step(out) runs
    after each optimizer step. Returns the losses."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        out = model(batch_fn(), step_ctx())
        opt.zero_grad()
        check_step(model, out)
        opt.step()
        if after_step is not None:
            after_step(out)
        losses.append(out["loss"].item())
    return losses


def pretrain_knn(method: str, tmp_path: Path, overrides: dict, steps: int = 2) -> dict[str, Any]:
    """A `steps`-step run of `method` with the tiny overrides (tests/conftest.py), then its kNN evaluation."""
    from byon.engine.run import train
    from byon.eval.frozen import evaluate

    over = overrides | {"method": method}
    over["train"] = over["train"] | {"max_steps": steps}
    run = train(build_config(over), tmp_path / "run")
    return evaluate("knn", run, "synthetic", subset=64)
