"""`byon bench speed`: how fast each method turns compute into training (benchmarks.md, speed protocol).

Per method, in one process: steady-state training images/s through the real engine (after warm-up steps),
training FLOPs per image (`torch.utils.flop_counter`), the achieved FLOP/s, and the machine's matmul
ceiling measured minutes apart at most with the same threads (a square GEMM at the model's MLP width and
a large one), with their ratio — the CPU analogue of MFU; on CUDA also MFU against the card's dense bf16
peak. Then feature-extraction images/s and kNN / linear-probe seconds on the protocol's train/test splits,
and peak memory. One JSON per method under `<results>/speed-cpu/` (`speed-gpu/` on CUDA).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile

from byon.bench.quality import PROTOCOLS, _env
from byon.data import channel_stats, load_dataset
from byon.engine.run import train
from byon.errors import ByonError, unknown
from byon.eval.features import extract_features
from byon.eval.knn import knn_classify
from byon.eval.linear import linear_probe
from byon.methods import METHODS, load_config
from byon.rundir import load_run, write_json

# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device-name substring, first match wins (vendor
# spec sheets). Unknown cards get no MFU rather than a guess.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
)



def peak_bf16_flops(device_name: str) -> float | None:
    """FLOP/s of the card's dense bf16 peak, or None for a card not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(n: int, device: torch.device, dtype: torch.dtype = torch.float32, min_time: float = 0.5,
                 repeats: int = 3) -> float:
    """Sustained FLOP/s of an (n × n) @ (n × n) product in a loop (after two warm-up products): the best of
    `repeats` loops, so one interrupted loop does not lower the ceiling."""
    return max(_matmul_loop(n, device, dtype, min_time) for _ in range(max(1, repeats)))


def _matmul_loop(n: int, device: torch.device, dtype: torch.dtype, min_time: float) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    _sync(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        iters += 1
        if iters >= 3 and iters & (iters - 1) == 0:  # check the clock at powers of two: few syncs
            _sync(device)
            if time.perf_counter() - t0 >= min_time:
                break
    return 2 * n**3 * iters / (time.perf_counter() - t0)


class _Memory:
    """Peak memory of what runs between `start()` and `peak_mb()`: on CUDA the allocator's peak; on CPU the
    process's peak RSS, whose high-water mark Linux lets a process reset (/proc/self/clear_refs), else the
    lifetime peak (`ru_maxrss`)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.kind = device, "cuda max_memory_allocated"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.before = status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
            self.kind = "peak RSS (VmHWM, reset before the run)"
        except OSError:
            self.kind = "peak RSS of the process (ru_maxrss)"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind.startswith("peak RSS (VmHWM"):
            return status_kb("VmHWM") / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def before_mb(self) -> float | None:
        return None if self.device.type == "cuda" else self.before / 1024


# A speed record is taken alone: other processes may use at most this share of the machine's CPU time during the
# timed window (and while the matmul ceiling is measured), else the record is refused (or, with allow_busy,
# written marked `quiet: false`).
BUSY_SHARE = 0.10


class MachineLoad:
    """CPU time that *other* processes used between `start()` and `stop()`, as a share of the machine's capacity
    (wall time × cores), from /proc/stat's busy jiffies minus the CPU time of this process and all its
    descendants — DataLoader workers, DDP's other ranks (spawned by rank 0, never reaped into this process's
    RUSAGE_CHILDREN while they run), a script's worker processes — polled from /proc every `every` seconds; plus
    the 1-minute load averages at both ends. A descendant that exits between polls loses at most its last
    interval, which then counts as other processes' (so the error errs on the busy side). None where /proc/stat
    is missing (not Linux)."""

    def __init__(self, every: float = 2.0) -> None:
        self.share: float | None = None
        self.load: tuple[float, float] | None = None
        self.every = every
        self.tree_seconds = 0.0  # descendants' CPU seconds in the window, counted as this process's own
        self._tree: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def descendants_cpu(root: int | None = None) -> dict[int, float]:
        """{pid: CPU seconds (user + system)} of every live descendant of `root` (default: this process), from
        /proc/<pid>/stat; {} where /proc is missing."""
        root = os.getpid() if root is None else root
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        try:
            entries = [d for d in Path("/proc").iterdir() if d.name.isdigit()]
        except OSError:
            return {}
        for d in entries:
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            parents[int(d.name)] = int(f[1])
            times[int(d.name)] = (int(f[11]) + int(f[12])) / tick
        out = {}
        for pid, t in times.items():
            p = parents.get(pid)
            while p is not None and p != root and p in parents:
                p = parents[p]
            if p == root and pid != root:
                out[pid] = t
        return out

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self._merge(self.descendants_cpu())

    def _merge(self, seen: dict[int, float]) -> None:
        for pid, t in seen.items():
            self._tree[pid] = max(self._tree.get(pid, 0.0), t)

    def _own_seconds(self) -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def start(self) -> None:
        self._tree0 = self.descendants_cpu()
        self._tree = dict(self._tree0)
        self._t, self._busy, self._own = time.perf_counter(), self._busy_seconds(), self._own_seconds()
        self._load0 = os.getloadavg()[0]
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="MachineLoad", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._merge(self.descendants_cpu())
        busy = self._busy_seconds()
        wall = time.perf_counter() - self._t
        own = self._own_seconds() - self._own
        self.tree_seconds = tree = sum(t - self._tree0.get(pid, 0.0) for pid, t in self._tree.items())
        if busy is not None and self._busy is not None and wall > 0:
            others = (busy - self._busy) - own - tree
            self.share = round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 4)
        self.load = (round(self._load0, 2), round(os.getloadavg()[0], 2))


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def step_timer(warmup: int, last: int) -> Any:
    """A Lightning callback timing optimizer steps warmup+1 … last (device-synchronised at both ends)."""
    class StepTimer(Callback):
        """Also measures the other processes' CPU share (`load`) and this process's minor page faults over the
        window (`minflt`)."""

        def __init__(self) -> None:
            self.t0 = self.t1 = None
            self.load = MachineLoad()
            self.minflt = 0

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step in (warmup, last):
                _sync(pl_module.device)
                now = time.perf_counter()
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                if trainer.global_step == warmup:
                    self.t0, self.minflt = now, faults
                    self.load.start()
                else:
                    self.t1, self.minflt = now, faults - self.minflt
                    self.load.stop()

    return StepTimer()


# Ops whose time is GEMM / attention-kernel time: where nearly all of a ViT's FLOPs are spent (patch embedding
# is a convolution). The CPU and CUDA names of the same kernels.
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
            "aten::mkldnn_convolution", "aten::convolution_backward", "aten::cudnn_convolution")
ATTENTION_PREFIX = ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")


def step_profiler(first: int, last: int) -> Any:
    """A Lightning callback running `torch.profiler` over optimizer steps first+1 … last (after the timed
    window, so the timing carries no profiler overhead). `.events` holds the key averages afterwards."""
    class StepProfiler(Callback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.events: Any = None
            self.seconds = 0.0
            self._t0 = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == first and self.prof is None:
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pl_module.device.type == "cuda" else [])
                _sync(pl_module.device)
                self.prof = profile(activities=acts)
                self.prof.__enter__()
                self._t0 = time.perf_counter()
                self.minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == last and self.prof is not None and self.events is None:
                _sync(pl_module.device)
                self.seconds = time.perf_counter() - self._t0
                self.minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.minflt
                self.prof.__exit__(None, None, None)
                self.events = self.prof.key_averages()

    return StepProfiler()


def profile_summary(events: Any, seconds: float, steps: int, flops_per_step: float, device: str,
                    top: int = 12) -> dict[str, Any]:
    """Where a profiled window's time went: the self-time share of GEMM/convolution kernels, of attention
    kernels and of everything else (elementwise, norms, copies, optimizer, Python glue), the FLOP rate
    *inside* GEMM + attention (the model's FLOPs over their time: how close the kernels themselves run to the
    matmul ceiling), and the top ops by self time. On CUDA the times are device self-times."""
    def self_us(e: Any) -> float:
        if device == "cuda":
            return float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0))
        return float(e.self_cpu_time_total)

    rows = [(e.key, self_us(e), e.count) for e in events if self_us(e) > 0]
    total = sum(t for _, t, _ in rows) or 1.0
    gemm = sum(t for k, t, _ in rows if k in GEMM_OPS)
    attn = sum(t for k, t, _ in rows if k.startswith(ATTENTION_PREFIX))
    kernel_s = (gemm + attn) / 1e6
    rows.sort(key=lambda r: -r[1])
    return {
        "profiled_steps": steps, "profiled_seconds": round(seconds, 3), "self_time_seconds": round(total / 1e6, 3),
        "gemm_share": round(gemm / total, 4), "attention_share": round(attn / total, 4),
        "other_share": round(1 - (gemm + attn) / total, 4),
        "gflops_inside_gemm_attention": round(flops_per_step * steps / kernel_s / 1e9, 2) if kernel_s else None,
        "ops_per_step": round(sum(c for _, _, c in rows) / steps),
        "top_ops": [{"op": k, "share": round(t / total, 4), "calls_per_step": round(c / steps, 1)}
                    for k, t, c in rows[:top]],
    }


def speed_method(method: str, protocol: str, runs: Path, steps: int, warmup: int, root: str | None = None,
                 extra: list[str] | None = None, accelerator: str = "auto", evaluate: bool = True,
                 profile_steps: int = 0, config: Path | None = None) -> dict[str, Any]:
    """Train `method` for warmup + steps steps under `protocol`'s data/model/batch, time it, profile
    `profile_steps` more, then (with `evaluate`) time the evaluations on the run's encoder. Returns the record
    (see the module docstring). `config`: a YAML config of `method` applied under the protocol (e.g.
    configs/byon/default.yaml, whose reading changes the cost); the record is then named `<method>-<stem>`, or
    `<method>-tuned` for the method's own configs/<method>.yaml (its val-tuned recipe)."""
    p = PROTOCOLS[protocol]
    use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    overrides = {"method": method} | p.overrides(
        root, max_steps=warmup + steps + profile_steps, progress=False, ckpt_every_epochs=0,
        accelerator="gpu" if use_cuda else "cpu", devices=1)
    cfg = load_config(config, overrides, sets=extra or [])
    name = method if config is None else f"{method}-{'tuned' if config.stem == method else config.stem}"
    run = runs / name
    if run.exists():
        shutil.rmtree(run)  # a timing run starts fresh: a resumed one would time nothing
    timer = step_timer(warmup, warmup + steps)
    prof = step_profiler(warmup + steps, warmup + steps + profile_steps) if profile_steps else None
    mem = _Memory(device)
    mem.start()
    train(cfg, run, callbacks=(timer,) if prof is None else (timer, prof))
    peak_mb = mem.peak_mb()
    summary = json.loads((run / "summary.json").read_text())
    if timer.t0 is None or timer.t1 is None:
        raise ByonError(f"bench speed: the run stopped after {summary['steps']} steps, before the timed window "
                        f"({warmup} warm-up + {steps}); the protocol's data must give that many batches")
    global_batch = summary["global_batch"]
    images_per_s = steps * global_batch / (timer.t1 - timer.t0)
    flops = summary["flops_per_image"]
    achieved = flops * images_per_s

    # the ceiling, right after: the model's MLP width (its largest GEMM's inner size) and a large square
    _, model = load_run(run)
    enc = model.encoder
    n_model = int(enc.blocks[0].mlp.fc1.out_features) if len(enc.blocks) else enc.embed_dim
    n_large = 8192 if device.type == "cuda" else 2048
    ceil_dtype = torch.bfloat16 if summary["precision"].startswith("bf16") else torch.float32
    ceil_load = MachineLoad()
    ceil_load.start()
    ceiling = {"dtype": str(ceil_dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
               f"gflops_n{n_model}": round(matmul_flops(n_model, device, ceil_dtype) / 1e9, 1),
               f"gflops_n{n_large}": round(matmul_flops(n_large, device, ceil_dtype) / 1e9, 1)}
    if device.type == "cuda" and ceil_dtype != torch.float32:  # also the fp32 (TF32 as configured) ceiling
        ceiling["gflops_fp32_large"] = round(matmul_flops(n_large, device, torch.float32) / 1e9, 1)
    ceil_load.stop()
    ceiling["repeats_best_of"] = 3
    best = max(ceiling[f"gflops_n{n_model}"], ceiling[f"gflops_n{n_large}"]) * 1e9
    shares = [x for x in (timer.load.share, ceil_load.share) if x is not None]
    machine = {"other_cpu_share_train": timer.load.share, "other_cpu_share_ceiling": ceil_load.share,
               "loadavg_1m_train": timer.load.load, "busy_threshold": BUSY_SHARE,
               "quiet": None if not shares else max(shares) <= BUSY_SHARE}
    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None

    speed = {
        "warmup_steps": warmup, "timed_steps": steps, "global_batch": global_batch,
        "train_images_per_s": round(images_per_s, 1), "flops_per_image": flops,
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_ceiling": ceiling,
        "achieved_over_ceiling": round(achieved / best, 4),
        "mfu_bf16": round(achieved / peak, 4) if peak else None,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "peak_memory_mb": round(peak_mb, 1), "memory_measure": mem.kind,
        "rss_before_mb": None if mem.before_mb() is None else round(mem.before_mb(), 1),
        "minor_page_faults_per_step": round(timer.minflt / steps, 1),
        "machine": machine,
    }
    if prof is not None:
        if prof.events is None:
            raise ByonError(f"bench speed: the run stopped after {summary['steps']} steps, before the profiled "
                            f"window ended; lower --profile-steps")
        speed["profile"] = profile_summary(prof.events, prof.seconds, profile_steps, flops * global_batch,
                                           device.type)
        speed["profile"]["minor_page_faults_per_step"] = round(prof.minflt / profile_steps, 1)
    record = {"name": name, "method": method, "protocol": protocol, "device": device.type,
              **({} if config is None else {"config_file": str(config)}),
              "precision": summary["precision"], "config": cfg.to_dict(), "run_dir": str(run),
              "command": shlex.join(sys.argv), "speed": speed} | _env()
    if not evaluate:
        return record

    # evaluation timings on the protocol's splits with the run's (briefly trained) encoder
    train_d = load_dataset(p.dataset, "train", root=root)
    test_d = load_dataset(p.dataset, "test", root=root)
    mean, std = channel_stats(train_d.images)
    model = model.to(device).eval()
    fn = model.features
    _sync(device)
    t0 = time.perf_counter()
    f_train = extract_features(fn, train_d.images, mean, std, batch_size=512, device=device)
    f_test = extract_features(fn, test_d.images, mean, std, batch_size=512, device=device)
    t_feat = time.perf_counter() - t0
    key = model.default_feature
    tr, te = f_train[key].to(device), f_test[key].to(device)
    ytr, yte = train_d.labels.to(device), test_d.labels.to(device)
    t0 = time.perf_counter()
    knn = knn_classify(tr, ytr, te, yte)
    _sync(device)
    t_knn = time.perf_counter() - t0
    t0 = time.perf_counter()
    lin = linear_probe(tr, ytr, te, yte, epochs=p.linear_epochs, device=device)
    _sync(device)
    t_lin = time.perf_counter() - t0

    speed.update({
        "feature_images_per_s": round((len(train_d) + len(test_d)) / t_feat, 1),
        "feature_images": len(train_d) + len(test_d), "knn_seconds": round(t_knn, 3),
        "linear_seconds": round(t_lin, 3), "linear_epochs": p.linear_epochs,
        "knn_top1": knn["top1"], "linear_top1": lin["top1"],  # sanity only: a few steps of training
    })
    return record


def bench_speed(methods: list[str], protocol: str, runs: Path, results: Path, steps: int = 50, warmup: int = 10,
                root: str | None = None, extra: list[str] | None = None, accelerator: str = "auto",
                evaluate: bool = True, profile_steps: int = 0, allow_busy: bool = False,
                config: Path | None = None) -> list[Path]:
    """Run `speed_method` for each method; write `<results>/speed-{cpu,gpu}/<method>.json` (overwritten:
    timings are re-measured, not cached). A measurement taken while other processes used more than `BUSY_SHARE`
    of the CPU is refused with a ByonError naming the share (nothing written), unless `allow_busy`: then it is
    written with `speed.machine.quiet = false`. `config`: one method's YAML config (see `speed_method`), written
    as `<method>-<stem>.json` beside the built-in recipe's record."""
    if protocol not in PROTOCOLS:
        raise unknown("protocol", protocol, PROTOCOLS)
    for m in methods:
        if m not in METHODS:
            raise unknown("method", m, METHODS)
    if config is not None:
        if not config.is_file():
            raise ByonError(f"bench speed --config {config}: no such file")
        own = load_config(config).method
        if methods != [own]:
            raise ByonError(f"bench speed --config {config} is a {own} config; pass --methods {own} alone")
    if steps < 1 or warmup < 1 or profile_steps < 0:
        raise ByonError(f"bench speed needs --steps >= 1, --warmup >= 1 and --profile-steps >= 0, got {steps}, "
                        f"{warmup} and {profile_steps}")
    done = []
    for m in methods:
        rec = speed_method(m, protocol, runs, steps, warmup, root, extra, accelerator, evaluate, profile_steps,
                           config)
        mc = rec["speed"]["machine"]
        if mc["quiet"] is False and not allow_busy:
            busiest = max(x for x in (mc["other_cpu_share_train"], mc["other_cpu_share_ceiling"]) if x is not None)
            raise ByonError(f"bench speed: other processes used {100 * busiest:.0f} % of the CPU while {m} was timed "
                            f"(at most {100 * BUSY_SHARE:.0f} % for a record); run it on an idle machine, or pass "
                            f"--allow-busy to write it marked quiet: false")
        out = results / f"speed-{'gpu' if rec['device'] == 'cuda' else 'cpu'}" / f"{rec['name']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, rec)
        done.append(out)
    return done


def speed_table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown rows for RESULTS.md, one per method."""
    head = ("| method | train img/s | GFLOPs/img | achieved GFLOP/s | matmul ceiling GFLOP/s (model n / large n) "
            "| achieved / ceiling | MFU (bf16 peak) | time in GEMM / attention / other "
            "| GFLOP/s inside GEMM + attention | peak mem MB | features img/s | kNN s | linear s | taken alone |")
    lines = [head, "|" + "---|" * 14]

    def opt(x: float | None, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    for r in sorted(records, key=lambda r: r["name"]):
        s = r["speed"]
        ceil = s["matmul_ceiling"]
        sizes = [k for k in ceil if k.startswith("gflops_n")]
        mfu = "—" if s.get("mfu_bf16") is None else f"{100 * s['mfu_bf16']:.1f} %"
        prof = s.get("profile")
        shares = "—" if prof is None else " / ".join(
            f"{100 * prof[k]:.0f} %" for k in ("gemm_share", "attention_share", "other_share"))
        inside = opt(None if prof is None else prof["gflops_inside_gemm_attention"], ".1f")
        lines.append(
            f"| {r['name']} | {s['train_images_per_s']:.0f} | {s['flops_per_image'] / 1e9:.4f} | "
            f"{s['achieved_gflops']:.1f} | {' / '.join(f'{ceil[k]:.0f}' for k in sizes)} ({ceil['dtype']}, "
            f"n={' / '.join(k.removeprefix('gflops_n') for k in sizes)}, {ceil['threads']} threads) | "
            f"{100 * s['achieved_over_ceiling']:.1f} % | {mfu} | {shares} | {inside} | {s['peak_memory_mb']:.0f} | "
            f"{opt(s.get('feature_images_per_s'), '.0f')} | {opt(s.get('knn_seconds'), '.2f')} | "
            f"{opt(s.get('linear_seconds'), '.2f')} | {_alone(s.get('machine'))} |")
    return lines


def _alone(machine: dict[str, Any] | None) -> str:
    """'yes (others 3 %)', 'NO (others 45 %)', or 'not recorded' for a record older than the check."""
    if not machine or machine.get("quiet") is None:
        return "not recorded"
    busiest = max(x for x in (machine["other_cpu_share_train"], machine["other_cpu_share_ceiling"]) if x is not None)
    return f"{'yes' if machine['quiet'] else 'NO'} (others {100 * busiest:.0f} %)"


__all__ = ["PEAK_BF16_TFLOPS", "bench_speed", "matmul_flops", "peak_bf16_flops", "profile_summary", "speed_method",
           "speed_table", "step_profiler"]
