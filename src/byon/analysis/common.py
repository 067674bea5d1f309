"""What every analysis shares: a trained run plus a seeded sample of its images, output paths, figures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from byon.config import RunConfig
from byon.data import DataInfo, load_dataset
from byon.data.transforms import denormalize, normalize
from byon.errors import ByonError
from byon.rundir import load_run_for, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure



MAX_ROWS = 64  # images in one figure grid


def check_rows(n: int) -> None:
    if not 1 <= n <= MAX_ROWS:
        raise ByonError(f"--n {n}: one figure shows 1 to {MAX_ROWS} images; use --n between them")


def output_paths(run_dir: Path, name: str, out: str | Path | None = None) -> tuple[Path, Path]:
    """(PNG, JSON) paths: `<run>/analysis/<name>.{png,json}` by default; `out` is a directory (existing, or
    given without a suffix) to write `<name>.*` into, or a file stem (`x`, `x.png` or `x.json` → x.png, x.json)."""
    if out is None:
        stem = run_dir / "analysis" / name
    else:
        out = Path(out)
        if out.is_dir() or not out.suffix:
            stem = out / name
        elif out.suffix in (".png", ".json"):
            stem = out.with_suffix("")
        else:
            raise ByonError(f"--out '{out}' should be a directory or a .png/.json path")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".json")


@dataclass
class RunSample:
    """A loaded run and n images of one split, chosen by a seeded permutation (so classes mix).
    images: uint8 (n, C, H, W) on the CPU; labels: int64 (n,) or None; method: eval mode, on `device`."""

    run_dir: Path
    cfg: RunConfig
    method: nn.Module
    info: DataInfo
    images: Tensor
    labels: Tensor | None
    dataset: str
    split: str
    seed: int
    device: torch.device

    def normalized(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) → the run's normalised float input on `device`."""
        return normalize(images.to(self.device), self.info.mean, self.info.std)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """uint8 (b, C, H, W) slices of the sample."""
        if batch_size < 1:
            raise ByonError(f"--batch-size must be ≥ 1, got {batch_size}")
        for i in range(0, len(self.images), batch_size):
            yield self.images[i:i + batch_size]

    def header(self, analysis: str) -> dict[str, Any]:
        return {"analysis": analysis, "run": str(self.run_dir), "method": self.cfg.method,
                "dataset": self.dataset, "split": self.split, "n": len(self.images), "seed": self.seed}

    def to_display(self, x: Tensor) -> Tensor:
        """Normalised (B, C, H, W) → (B, H, W, C) in [0, 1] on the CPU, for imshow."""
        return denormalize(x.detach().float().cpu(), self.info.mean, self.info.std).clamp(0, 1).permute(0, 2, 3, 1)


def load_sample(run_dir: str | Path, n: int, dataset: str | None = None, split: str = "test",
                root: str | None = None, seed: int = 0, device: str | None = None, hook: str | None = None,
                purpose: str = "this analysis") -> RunSample:
    """Load a run (`load_run_for`: a method without the method hook `hook` is an error naming `purpose`) and n
    images of `split` of `dataset` (default: the run's pretraining data)."""
    run_dir = Path(run_dir)
    if n < 1:
        raise ByonError(f"--n must be ≥ 1, got {n}")
    cfg, method, dev = load_run_for(run_dir, hook, purpose, device)
    info = method.info
    dataset = dataset or cfg.data.dataset
    root = root if root is not None else cfg.data.root
    data = load_dataset(dataset, split, root=root, image_size=cfg.data.image_size)
    if data.in_chans != info.in_chans or data.img_size != info.img_size:
        raise ByonError(f"dataset '{dataset}' has {data.in_chans}x{data.img_size}px images but the run's encoder "
                        f"expects {info.in_chans}x{info.img_size}px; analyse it on data shaped like its training data")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return RunSample(run_dir=run_dir, cfg=cfg, method=method, info=info, images=data.images[idx],
                     labels=None if data.labels is None else data.labels[idx], dataset=dataset, split=split,
                     seed=seed, device=dev)


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, png: Path, result: dict[str, Any], json_path: Path) -> dict[str, Any]:
    """Write the PNG and the JSON (the result with both paths added); return that result."""
    result = result | {"files": {"png": str(png), "json": str(json_path)}}
    fig.savefig(png, dpi=120)
    write_json(json_path, result)
    return result


def imshow_image(ax: Any, image: Tensor) -> None:
    """One (H, W, C) [0, 1] image, grey for one channel, no ticks."""
    ax.imshow(image[..., 0].numpy() if image.shape[-1] == 1 else image.numpy(), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
