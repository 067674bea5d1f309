"""How many training processes a run starts, and with how many threads: `train.devices: auto` on a CPU.

The rule (measured, not probed at start-up, which would cost more than it saves on a short run): on a CPU with
more than one physical core, one DDP process per core with one thread each. On the 2-core box this library is
developed on (MAE at vit-micro, batch 256, idle machine; benchmarks/cpu-cores.md) one process on 1 thread gave
249 images/s, one process on 2 threads 1.73x that, two DDP processes on 1 thread each 1.95x (issue 22 had
measured 1.62x and 1.83x on another day's machine): torch's intra-op threading
leaves a core idle in the many small ops of a ViT step (softmax, layer norm, the optimizer), separate
processes do not. The global batch stays `train.batch_size`, split over the processes, and every draw is keyed
to the sample (`byon.draws`), so the run trains the same as one process would, up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from byon.config import TrainConfig
from byon.errors import ByonError

MEASURED = "on 2 cores DDP gave 1.95x one thread, 2 threads in one process 1.73x"


@dataclass(frozen=True)
class ProcessPlan:
    """What `train.devices: auto` resolved to: the Lightning devices/strategy, torch threads per process and
    the per-process batch; `line` says so (the run's first line)."""

    devices: int | str
    strategy: str
    num_threads: int | None
    batch_size: int  # per process
    line: str


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (Linux: distinct (package, core) pairs of
    /proc/cpuinfo; elsewhere, or unreadable, the usable logical CPUs)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return len(usable)
    cores, cpu, package = set(), None, "0"
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            cpu, package = int(value), "0"
        elif key == "physical id":
            package = value
        elif key == "core id" and cpu in usable:
            cores.add((package, value))
    return len(cores) or len(usable)


def on_cpu(accelerator: str) -> bool:
    """Whether Lightning's accelerator choice lands on the CPU."""
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()


def plan_processes(t: TrainConfig, per_core: bool, cores: int | None = None) -> ProcessPlan:
    """Resolve `t.devices`. Anything but "auto" is kept as given. "auto" is one DDP process per physical core
    (`cores`, default `physical_cores()`), 1 thread each, when `per_core` (the `byon pretrain` command, whose
    command line Lightning re-runs for the other processes; a library caller's script would be re-run too)
    and the run is a plain one-node CPU run with neither `train.strategy` nor `train.num_threads` set and no
    external launcher (torchrun, SLURM); otherwise one device, as before."""
    same = ProcessPlan(t.devices, t.strategy, t.num_threads, t.batch_size, "")
    if str(t.devices) != "auto":
        return same
    one = ProcessPlan(1, t.strategy, t.num_threads, t.batch_size, "")
    if not on_cpu(t.accelerator):
        return one
    threads = t.num_threads or torch.get_num_threads()
    launched = any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS"))
    cores = physical_cores() if cores is None else cores
    why = ("train.num_threads is set" if t.num_threads else "train.strategy is set" if t.strategy != "auto"
           else "train.num_nodes > 1" if t.num_nodes > 1 else "an external launcher started it" if launched
           else "a library call (only `byon pretrain` starts processes)" if not per_core
           else "the CPU has 1 core" if cores < 2 else None)
    if why is not None:
        return ProcessPlan(1, t.strategy, t.num_threads, t.batch_size,
                           f"processes: 1 process x {threads} threads on the CPU ({why})")
    if t.batch_size % cores:
        raise ByonError(f"train.batch_size {t.batch_size} (the global batch) does not split over the {cores} CPU "
                        f"processes of train.devices=auto; use a multiple of {cores} (e.g. "
                        f"{t.batch_size // cores * cores or cores}), or --devices 1 for one process")
    return ProcessPlan(cores, "ddp", 1, t.batch_size // cores,
                       f"processes: {cores} DDP processes x 1 thread, one per CPU core (train.devices=auto; "
                       f"{MEASURED}); global batch {t.batch_size} = {t.batch_size // cores} per process; "
                       f"--devices 1 for one process")
