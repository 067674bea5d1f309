"""`byon bench data`: how fast the streaming path decodes, and how many workers one GPU would need.

On a generated JPEG folder (default 2,000 images of 300–500 px, `write_jpeg_folder`) or a given one: images/s of
decode + random-resized-crop at 224 px through `StreamLoader`, per worker and in total, for each worker count,
from the folder and from tar shards written from it; peak RSS of the process and of its largest worker. Then
an estimate of what one GPU's training step consumes: BYON's training FLOPs per image at ViT-B/16 (counted by
`torch.utils.flop_counter` on one CPU step) against an H100 at an assumed share of its dense bf16 peak, and the
decoding workers that rate needs at the measured per-worker speed. Writes a JSON and a Markdown record.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from byon.bench.speed import status_kb
from byon.data import DataInfo
from byon.data.datasets import open_dataset
from byon.data.shards import write_shards
from byon.data.stream import StreamData, StreamLoader
from byon.data.synthetic import write_jpeg_folder
from byon.engine.run import flops_per_image
from byon.methods import build_method, load_config
from byon.provenance import hardware
from byon.rundir import atomic_write, write_json

H100_BF16_TFLOPS = 989.4  # dense bf16 peak, no sparsity (NVIDIA's H100 SXM sheet)
ASSUMED_MFU = 0.4  # a realistic share of it for ViT-B training in bf16 (an assumption, not a measurement)
CROP = (0.2, 1.0)  # MAE's ImageNet crop, as configs/byon/imagenet.yaml


def decode_rate(data: StreamData, workers: int, batch: int) -> dict[str, float]:
    """One pass over `data` with `workers` decoding processes: images/s in total (worker start-up included) and
    in the steady part after the first batch."""
    loader = StreamLoader(data, batch, seed=0, num_workers=workers, crop_scale=CROP)
    t0 = time.perf_counter()
    t_first, n, n_first = None, 0, 0
    for images, _ in loader:
        n += len(images)
        if t_first is None:
            t_first, n_first = time.perf_counter(), n
    wall = time.perf_counter() - t0
    steady = (n - n_first) / (time.perf_counter() - t_first) if t_first is not None and n > n_first else float("nan")
    total = n / wall
    return {"workers": workers, "images": n, "wall_s": round(wall, 2), "images_per_s": round(total, 1),
            "steady_images_per_s": round(steady, 1), "per_worker_images_per_s": round(steady / max(workers, 1), 1)}


def byon_flops(image_size: int) -> float:
    """BYON's training FLOPs per image (forward + backward) at ViT-B/16, configs/byon/imagenet.yaml's settings."""
    config = Path(__file__).resolve().parents[3] / "configs" / "byon" / "imagenet.yaml"
    cfg = load_config(str(config) if config.is_file() else None,
                      {"method": "byon", "model": {"preset": "vit-base"}, "data": {"image_size": image_size}})
    info = DataInfo("imagenet", image_size, 3, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    method, _ = build_method(cfg, info)
    return flops_per_image(method, info, cfg, batch=2)  # 2: the projector's BatchNorm needs more than one


def own_peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM where /proc has it — getrusage's ru_maxrss survives execve on Linux, so a
    process started from a larger one would report that one's peak."""
    try:
        return status_kb("VmHWM") / 1024 or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_data(out: Path, images: str | Path | None = None, generate: int = 2000, sizes: Sequence[int] = (300, 500),
               image_size: int = 224, workers: Sequence[int] = (0, 1, 2), batch: int = 64,
               shards: bool = True, flops: bool = True, command: str = "") -> dict[str, Any]:
    """Measure, write `out` (.json) and its Markdown twin (.md); returns the record."""
    with tempfile.TemporaryDirectory(prefix="byon-bench-data-") as tmp:
        folder = Path(images) if images else write_jpeg_folder(Path(tmp) / "images", generate, tuple(sizes), 10)
        data = open_dataset("imagefolder", "train", folder, image_size)
        files = sum(os.path.getsize(data.reader.name(i)) for i in range(len(data)))
        rows = [{"source": "folder", **decode_rate(data, w, batch)} for w in workers]
        if shards:
            write_shards(folder, Path(tmp) / "shards", shard_size=500)
            sharded = open_dataset("shards", "train", Path(tmp) / "shards", image_size)
            rows += [{"source": "shards", **decode_rate(sharded, w, batch)} for w in workers]
    rss = own_peak_rss_mb()
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    best = max((r for r in rows if r["workers"] >= 1), key=lambda r: r["per_worker_images_per_s"], default=rows[0])
    per_worker = best["per_worker_images_per_s"]
    record: dict[str, Any] = {
        "command": command,
        "images": len(data), "generated": images is None, "source_sizes_px": list(sizes) if images is None else None,
        "mean_file_kb": round(files / len(data) / 1024, 1), "image_size": image_size, "crop_scale": list(CROP),
        "batch": batch, "rows": rows, "peak_rss_mb": round(rss), "peak_worker_rss_mb": round(worker_rss),
        "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "hardware": hardware(), "torch": torch.__version__, "python": sys.version.split()[0],
    }
    if flops:
        f = byon_flops(image_size)
        gpu_rate = H100_BF16_TFLOPS * 1e12 * ASSUMED_MFU / f
        record["estimate"] = {
            "byon_vit_b_train_flops_per_image": f, "h100_bf16_peak_tflops": H100_BF16_TFLOPS,
            "assumed_mfu": ASSUMED_MFU, "gpu_images_per_s": round(gpu_rate),
            "per_worker_images_per_s": per_worker,
            "workers_per_gpu": int(-(-gpu_rate // per_worker)) if per_worker == per_worker and per_worker > 0 else None,
        }
    write_json(out, record)
    atomic_write(out.with_suffix(".md"), lambda f: f.write(render(record).encode()))
    return record


def render(r: dict[str, Any]) -> str:
    """The record as Markdown: the command, the table and the estimate, with what the numbers depend on."""
    lines = ["# Streaming data: decode + random-resized-crop throughput", "",
             "Generated by `byon bench data` (src/byon/bench/data.py); do not edit by hand.", "",
             f"Command: `{r['command']}`", "",
             f"{r['images']} JPEGs" + (f" generated at {r['source_sizes_px'][0]}–{r['source_sizes_px'][1]} px"
                                       if r["generated"] else "") +
             f" (mean file {r['mean_file_kb']} kB), decoded and random-resized-cropped (scale "
             f"{r['crop_scale'][0]}–{r['crop_scale'][1]}) to {r['image_size']} px in batches of {r['batch']}. "
             f"Machine: {r['hardware']}; load average "
             f"{', '.join(str(x) for x in r['load_average'])} at the end — "
             "it was shared with other jobs (two training runs), so these rates are a lower bound for an idle core, "
             "and more workers than free cores cannot add throughput. The generated images are smooth colour fields; "
             "ImageNet's photos (~110 kB per JPEG on average) hold more detail and decode more slowly.", "",
             "| source | workers | images/s total (with start-up) | images/s steady | per worker |",
             "|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['source']} | {row['workers']} | {row['images_per_s']} | {row['steady_images_per_s']} | "
                     f"{row['per_worker_images_per_s']} |")
    lines += ["", "Workers 0 decode in the training process itself. Peak RSS: "
              f"{r['peak_rss_mb']} MB for the process, {r['peak_worker_rss_mb']} MB for its largest worker "
              "(both include torch; the decoded folder is never held).", ""]
    e = r.get("estimate")
    if e:
        lines += ["## Workers one GPU needs (an estimate)", "",
                  f"BYON at ViT-B/16, {r['image_size']} px: {e['byon_vit_b_train_flops_per_image'] / 1e9:.0f} GFLOP "
                  "of training (forward + backward) per image, counted by torch.utils.flop_counter on one CPU step. "
                  f"An H100 at an assumed {e['assumed_mfu']:.0%} of its {e['h100_bf16_peak_tflops']:g} TFLOP/s dense "
                  f"bf16 peak trains ~{e['gpu_images_per_s']} images/s. At {e['per_worker_images_per_s']} images/s "
                  f"per decoding worker (measured above), one GPU needs about **{e['workers_per_gpu']} workers** "
                  "(data.num_workers). This is an estimate: the GPU rate is not measured here, an idle core decodes "
                  "faster than this shared one, and real photos decode more slowly than the generated images.", ""]
    return "\n".join(lines)
