"""`byon bench speed` end to end on the smoke protocol with a couple of steps, and its pieces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from byon.bench import speed
from byon.bench.report import render
from byon.bench.speed import bench_speed, matmul_flops, peak_bf16_flops, profile_summary
from byon.cli import main
from byon.errors import ByonError


def test_speed_writes_a_json_per_method_and_the_report_renders_it(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "BUSY_SHARE", 10.0)  # the test machine is busy; the verdict is tested below
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["bench", "speed", "--methods", "mae", "--protocol", "smoke", "--steps", "2", "--warmup", "1",
                 "--accelerator", "cpu", "--runs", str(runs), "--results", str(results)]) == 0
    rec = json.loads((results / "speed-cpu" / "mae.json").read_text())
    s = rec["speed"]
    assert rec["device"] == "cpu" and rec["precision"] == "32-true" and "metrics" not in rec
    assert rec["command"]  # the command line that measured it
    assert (s["warmup_steps"], s["timed_steps"], s["global_batch"]) == (1, 2, 64)
    assert s["train_images_per_s"] > 0 and s["flops_per_image"] > 0
    assert s["achieved_gflops"] == pytest.approx(s["flops_per_image"] * s["train_images_per_s"] / 1e9, rel=1e-2)
    ceiling = s["matmul_ceiling"]
    # vit-test: width 32, MLP ratio 2 → the model-sized GEMM is 64 × 64; the large one 2048
    assert ceiling["dtype"] == "float32" and ceiling["gflops_n64"] > 0 and ceiling["gflops_n2048"] > 0
    best = max(ceiling["gflops_n64"], ceiling["gflops_n2048"])
    assert s["achieved_over_ceiling"] == pytest.approx(s["achieved_gflops"] / best, rel=2e-2, abs=1e-4)
    assert s["mfu_bf16"] is None  # no GPU
    mc = s["machine"]
    assert mc["quiet"] is True and mc["other_cpu_share_train"] >= 0 and mc["other_cpu_share_ceiling"] >= 0
    assert ceiling["repeats_best_of"] == 3 and s["minor_page_faults_per_step"] >= 0
    assert s["peak_memory_mb"] > 0 and s["feature_images"] == 2500  # synthetic: 2000 train + 500 test
    assert s["feature_images_per_s"] > 0 and s["knn_seconds"] >= 0 and s["linear_seconds"] >= 0
    assert json.loads((runs / "mae" / "summary.json").read_text())["steps"] == 3

    text = render(results, tmp_path / "RESULTS.md").read_text()
    assert "## Speed: speed-cpu" in text
    row = next(line for line in text.splitlines() if line.startswith("| mae |"))
    assert len(row.split("|")) == 16  # 14 columns
    assert "| yes (others " in row


def test_training_only_with_a_profile_of_where_the_time_went(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["bench", "speed", "--methods", "mae", "--protocol", "smoke", "--steps", "1", "--warmup", "1",
                 "--profile-steps", "2", "--no-eval", "--accelerator", "cpu", "--runs", str(runs),
                 "--results", str(results), "--allow-busy"]) == 0
    s = json.loads((results / "speed-cpu" / "mae.json").read_text())["speed"]
    assert "feature_images_per_s" not in s and "knn_seconds" not in s
    assert json.loads((runs / "mae" / "summary.json").read_text())["steps"] == 4  # 1 + 1 timed + 2 profiled
    prof = s["profile"]
    assert prof["profiled_steps"] == 2 and prof["profiled_seconds"] > 0
    assert 0 < prof["gemm_share"] < 1 and 0 < prof["attention_share"] < 1  # a ViT step runs both kernels
    assert prof["gemm_share"] + prof["attention_share"] + prof["other_share"] == pytest.approx(1, abs=1e-3)
    assert prof["gflops_inside_gemm_attention"] > 0 and prof["ops_per_step"] > 0
    assert any(o["op"] in ("aten::mm", "aten::addmm") for o in prof["top_ops"])
    assert prof["minor_page_faults_per_step"] >= 0
    row = next(line for line in render(results, tmp_path / "R.md").read_text().splitlines()
               if line.startswith("| mae |"))
    assert "| — | — | — | " in row  # no eval timings (then whether it was taken alone)


def test_profile_summary_shares_and_kernel_flop_rate_of_known_events():
    class E:
        def __init__(self, key, us, count):
            self.key, self.self_cpu_time_total, self.count = key, us, count

    events = [E("aten::mm", 500.0, 10), E("aten::addmm", 100.0, 5), E("aten::_scaled_dot_product_flash_attention_"
              "for_cpu", 200.0, 2), E("aten::gelu", 150.0, 2), E("aten::copy_", 50.0, 21), E("aten::view", 0.0, 9)]
    p = profile_summary(events, seconds=0.002, steps=2, flops_per_step=4e6, device="cpu", top=3)
    assert (p["gemm_share"], p["attention_share"], p["other_share"]) == (0.6, 0.2, 0.2)
    assert p["gflops_inside_gemm_attention"] == pytest.approx(2 * 4e6 / 800e-6 / 1e9)  # 10 GFLOP/s
    assert [o["op"] for o in p["top_ops"]] == ["aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                                               "aten::gelu"]
    assert p["top_ops"][0] == {"op": "aten::mm", "share": 0.5, "calls_per_step": 5.0}
    assert p["ops_per_step"] == 20  # (10 + 5 + 2 + 2 + 21) / 2: events with self time only


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
    ({"profile_steps": -1}, "--profile-steps >= 0"),
    ({"protocol": "nope"}, "unknown protocol"),
    ({"config": Path("configs/byon/default.yaml")}, "pass --methods byon alone"),
    ({"config": Path("configs/nope.yaml")}, "no such file"),
])
def test_bad_arguments_are_errors(tmp_path, kwargs, message):
    args = {"methods": ["mae"], "protocol": "smoke", "runs": tmp_path, "results": tmp_path} | kwargs
    with pytest.raises(ByonError, match=message):
        bench_speed(**args)


def test_a_measurement_on_a_busy_machine_is_refused_or_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speed, "BUSY_SHARE", -1.0)  # any other process's CPU time counts as busy
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["bench", "speed", "--methods", "mae", "--protocol", "smoke", "--steps", "1", "--warmup", "1", "--no-eval",
            "--accelerator", "cpu", "--runs", str(runs), "--results", str(results)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "while mae was timed" in err and "--allow-busy" in err and "Traceback" not in err
    assert not (results / "speed-cpu" / "mae.json").exists()
    assert main([*args, "--allow-busy"]) == 0
    assert json.loads((results / "speed-cpu" / "mae.json").read_text())["speed"]["machine"]["quiet"] is False


def test_machine_load_counts_its_descendants_as_its_own():
    # a grandchild (as DDP's rank 1 is rank 0's child, a DataLoader worker the trainer's) burns 0.3 s of CPU
    burn = "import time\nwhile time.process_time() < 0.3: pass\ntime.sleep(60)"
    child = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {burn!r}]); time.sleep(60)"
    load = speed.MachineLoad(every=0.1)
    load.start()
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            tree = speed.MachineLoad.descendants_cpu()
            if len(tree) == 2 and max(tree.values()) >= 0.3:
                break
            time.sleep(0.1)
        load.stop()
    finally:
        for pid in speed.MachineLoad.descendants_cpu():
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert len(tree) == 2 and proc.pid in tree, tree  # the child and the grandchild, not this process
    assert load.tree_seconds >= 0.3 and load.share is not None


def test_machine_load_counts_other_processes_not_this_one():
    load = speed.MachineLoad()
    load.start()
    t = time.perf_counter()
    x = torch.randn(256, 256)
    while time.perf_counter() - t < 0.3:  # this process's own work is not "other"
        x = (x @ x).tanh()
    load.stop()
    assert load.share is not None and 0.0 <= load.share <= 1.0 and len(load.load) == 2


def test_a_config_file_is_timed_under_its_own_name(tmp_path):
    cfg = tmp_path / "narrow.yaml"
    cfg.write_text("method: mae\nmae: {decoder_depth: 1}\n")
    [out] = bench_speed(["mae"], "smoke", tmp_path / "runs", tmp_path / "results", steps=1, warmup=1, evaluate=False,
                        accelerator="cpu", allow_busy=True, config=cfg)
    rec = json.loads(out.read_text())
    assert out.name == "mae-narrow.json" and rec["name"] == "mae-narrow" and rec["config_file"] == str(cfg)
    assert rec["config"]["mae"]["decoder_depth"] == 1 and not (tmp_path / "results" / "speed-cpu" / "mae.json").exists()


def test_a_methods_own_config_is_timed_as_its_tuned_recipe(tmp_path):
    cfg = tmp_path / "mae.yaml"  # configs/<method>.yaml: the method's val-tuned recipe
    cfg.write_text("method: mae\nmae: {mask_ratio: 0.6}\n")
    [out] = bench_speed(["mae"], "smoke", tmp_path / "runs", tmp_path / "results", steps=1, warmup=1, evaluate=False,
                        accelerator="cpu", allow_busy=True, config=cfg)
    assert out.name == "mae-tuned.json" and json.loads(out.read_text())["config"]["mae"]["mask_ratio"] == 0.6
