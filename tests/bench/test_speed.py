"""`byon bench speed` end to end on the smoke protocol with a couple of steps, and its pieces."""

from __future__ import annotations

import json

import pytest
import torch

from byon.bench.report import render
from byon.bench.speed import bench_speed, matmul_flops, peak_bf16_flops
from byon.cli import main
from byon.errors import ByonError


def test_speed_writes_a_json_per_method_and_the_report_renders_it(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["bench", "speed", "--methods", "mae", "--protocol", "smoke", "--steps", "2", "--warmup", "1",
                 "--accelerator", "cpu", "--runs", str(runs), "--results", str(results)]) == 0
    rec = json.loads((results / "speed-cpu" / "mae.json").read_text())
    s = rec["speed"]
    assert rec["device"] == "cpu" and rec["precision"] == "32-true" and "metrics" not in rec
    assert (s["warmup_steps"], s["timed_steps"], s["global_batch"]) == (1, 2, 64)
    assert s["train_images_per_s"] > 0 and s["flops_per_image"] > 0
    assert s["achieved_gflops"] == pytest.approx(s["flops_per_image"] * s["train_images_per_s"] / 1e9, rel=1e-2)
    ceiling = s["matmul_ceiling"]
    # vit-test: width 32, MLP ratio 2 → the model-sized GEMM is 64 × 64; the large one 2048
    assert ceiling["dtype"] == "float32" and ceiling["gflops_n64"] > 0 and ceiling["gflops_n2048"] > 0
    best = max(ceiling["gflops_n64"], ceiling["gflops_n2048"])
    assert s["achieved_over_ceiling"] == pytest.approx(s["achieved_gflops"] / best, rel=2e-2, abs=1e-4)
    assert s["mfu_bf16"] is None  # no GPU
    assert s["peak_memory_mb"] > 0 and s["feature_images"] == 2500  # synthetic: 2000 train + 500 test
    assert s["feature_images_per_s"] > 0 and s["knn_seconds"] >= 0 and s["linear_seconds"] >= 0
    assert json.loads((runs / "mae" / "summary.json").read_text())["steps"] == 3

    text = render(results, tmp_path / "RESULTS.md").read_text()
    assert "## Speed: speed-cpu" in text
    row = next(line for line in text.splitlines() if line.startswith("| mae |"))
    assert len(row.split("|")) == 13  # 11 columns


def test_peak_table_by_device_name():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_bf16_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_bf16_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_bf16_flops("NVIDIA L40S") == pytest.approx(362.1e12)
    assert peak_bf16_flops("NVIDIA L4") == pytest.approx(121e12)
    assert peak_bf16_flops("Tesla V100-SXM2-16GB") is None


def test_matmul_ceiling_counts_two_n_cubed_per_product():
    assert matmul_flops(32, torch.device("cpu"), min_time=0.0) > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": ["nope"]}, "unknown method"),
    ({"steps": 0}, "--steps >= 1"),
    ({"protocol": "nope"}, "unknown protocol"),
])
def test_bad_arguments_are_errors(tmp_path, kwargs, message):
    args = {"methods": ["mae"], "protocol": "smoke", "runs": tmp_path, "results": tmp_path} | kwargs
    with pytest.raises(ByonError, match=message):
        bench_speed(**args)
