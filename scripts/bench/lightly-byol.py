#!/usr/bin/env python3
"""byon's BYOL training step against lightly's BYOL at the same shapes, one CPU thread (issue 22).

NEEDS A THROW-AWAY ENVIRONMENT: lightly is never a dependency of byon; it is imported only inside this script.
Make one beside the project's venv that shares its torch/timm/lightning (no second torch download):

    python3 -m venv /tmp/lightly-env
    echo /work/main/.venv/lib/python3.11/site-packages \\
        > /tmp/lightly-env/lib/python3.11/site-packages/byon-venv.pth
    /tmp/lightly-env/bin/pip install --no-deps lightly   # its other deps (tqdm, pytorch_lightning) come via the .pth

then, from the repository root:

    PYTHONPATH=$PWD/src /tmp/lightly-env/bin/python scripts/bench/lightly-byol.py

Shapes: the fmnist-cpu protocol — vit-micro (patch 4, D 128, depth 6, 4 heads, MLP ×4), 28 px, 1 channel, batch
256, both views. What one timed step is:
  (a) byon: the engine's step (PretrainModule.training_step → optimizer_step) on byon's own objects — the BYOL
      method built from the protocol's config, its forward (per-view encoder passes by default, the teacher, the
      BN heads, the cosine loss), the non-finite guard's buffer snapshot and finiteness checks, AdamW
      (param_groups, foreach) and the EMA update with byon's momentum schedule. Lightning's loop glue is left out.
  (b) lightly: lightly's BYOL example on a timm VisionTransformer of vit-micro's dims (timm defaults: learned
      positions) — BYOLProjectionHead(128, 512, 256) / BYOLPredictionHead(256, 512, 256) (byon's head sizes),
      deep-copied momentum backbone + projection head, lightly's update_momentum with lightly's cosine_schedule,
      one encoder pass per view, 0.5·(NegativeCosineSimilarity(p0, z1) + (p1, z0)), torch.optim.AdamW with
      byon's lr/betas/weight decay (torch's CPU default, the per-parameter loop, as a lightly user gets it).
Augmentation is EXCLUDED from both: both models take the same pre-made float views (byon's own BYOL views of one
uint8 batch, drawn once); byon's augmentation cost is timed separately (`byon_augment`).

Rounds are interleaved (A B, then B A, ...) after warm-up steps of each, so machine load drifts hit both alike;
the record gives each round's wall-clock img/s, img/s per CPU-second of this process (less sensitive to other
processes on a busy machine), minor page faults per step (ru_minflt) and the kernel share of CPU time, the
medians, the byon/lightly ratio, and `quiet`: whether other processes used at most 10 % of the machine's CPU
during the timed window (byon.bench.speed.MachineLoad). Writes benchmarks/results/lightly-byol-cpu.json and
benchmarks/lightly-byol-cpu.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from byon.bench.quality import PROTOCOLS
from byon.bench.speed import BUSY_SHARE, MachineLoad
from byon.data import DataInfo
from byon.engine.cpu_memory import keep_freed_memory
from byon.engine.optim import param_groups
from byon.methods import build_method, load_config
from byon.methods.context import step_context, step_generator
from byon.nn.ema import ema_update
from byon.nn.vit import resolve_shape
from byon.provenance import git_commit, git_dirty, hardware

PROTOCOL = "fmnist-cpu"
# Fashion-MNIST's channel statistics (the values only normalise the views; any would do for timing)
INFO = DataInfo(name="fashion-mnist", img_size=28, in_chans=1, num_classes=10, mean=(0.2860,), std=(0.3530,))


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


class Byon:
    """byon's BYOL step as the engine runs it (module docstring (a))."""

    name = "byon"

    def __init__(self, cfg: Any, views: tuple[torch.Tensor, torch.Tensor], raw: torch.Tensor, total_steps: int) -> None:
        self.cfg = cfg
        self.method, self.shape = build_method(cfg, INFO)
        self.method.train()
        o = cfg.optim
        self.opt = torch.optim.AdamW(param_groups(self.method, o.weight_decay), lr=_lr(cfg), betas=tuple(o.betas),
                                     foreach=True)  # the engine's choice off CUDA (PretrainModule.configure_optimizers)
        self.mean = torch.tensor(INFO.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(INFO.std).view(1, -1, 1, 1)
        self.raw, self.labels = raw, torch.zeros(raw.shape[0], dtype=torch.long)
        self.method.views = lambda raw, g: views  # the pre-made views: augmentation excluded (timed apart)
        self.total, self.step_i = total_steps, 0

    def step(self) -> float:
        i, m = self.step_i, self.method
        self.opt.zero_grad(set_to_none=True)
        buffers_before = [b.detach().clone() for b in m.buffers()]  # NonFiniteGuard.snapshot
        g = step_generator(self.cfg.train.seed, i, 0)
        ctx = step_context(self.cfg.data, self.mean, self.std, g, i, 0, self.total)
        out = m({"raw": self.raw, "label": self.labels}, ctx)
        out["loss"].backward()
        grads = [p.grad for group in self.opt.param_groups for p in group["params"] if p.grad is not None]
        ok = bool(torch.isfinite(out["loss"]).all()) and bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
        if not ok:
            raise RuntimeError(f"byon: non-finite step {i}")
        del buffers_before
        self.opt.step()
        ema_update(m.ema_pairs(), m.ema_momentum(i + 1, self.total))
        self.step_i += 1
        return float(out["loss"].detach())

    def augment(self, reps: int) -> dict[str, float]:
        """byon's own BYOL view pair of the uint8 batch, `reps` times: img/s by wall clock and per CPU-second."""
        u0, s0, _ = _usage()
        t0 = time.perf_counter()
        for k in range(reps):
            type(self.method).views(self.method, self.raw, step_generator(0, k, 0))
        wall = time.perf_counter() - t0
        u1, s1, _ = _usage()
        n = reps * self.raw.shape[0]
        return {"view_pairs_img_per_s": round(n / wall, 1),
                "view_pairs_img_per_cpu_s": round(n / (u1 - u0 + s1 - s0), 1), "reps": reps}


class Lightly:
    """lightly's BYOL example at byon's shapes (module docstring (b))."""

    name = "lightly"

    def __init__(self, cfg: Any, views: tuple[torch.Tensor, torch.Tensor], total_steps: int) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
        from lightly.utils.scheduler import cosine_schedule
        from timm.models.vision_transformer import VisionTransformer

        s, bcfg = resolve_shape(cfg.model, INFO.img_size, INFO.in_chans), cfg.method_cfg
        D = s.embed_dim
        hidden = bcfg.proj_hidden or 4 * D
        self.backbone = VisionTransformer(img_size=s.img_size, patch_size=s.patch_size, in_chans=s.in_chans,
                                          num_classes=0, embed_dim=D, depth=s.depth, num_heads=s.num_heads,
                                          mlp_ratio=s.mlp_ratio, qkv_bias=True, global_pool="token")
        self.projection_head = BYOLProjectionHead(D, hidden, bcfg.proj_dim)
        self.prediction_head = BYOLPredictionHead(bcfg.proj_dim, hidden, bcfg.proj_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.modules = torch.nn.ModuleList([self.backbone, self.projection_head, self.prediction_head,
                                            self.backbone_momentum, self.projection_head_momentum]).train()
        self.criterion = NegativeCosineSimilarity()
        self.update_momentum, self.cosine_schedule = update_momentum, cosine_schedule
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.modules.parameters(), lr=_lr(cfg), betas=tuple(o.betas),
                                     weight_decay=o.weight_decay)
        self.views, self.total, self.step_i = views, total_steps, 0
        self.base, self.end = bcfg.ema_base, bcfg.ema_end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def step(self) -> float:
        m = self.cosine_schedule(self.step_i, self.total, self.base, self.end)
        self.update_momentum(self.backbone, self.backbone_momentum, m=m)
        self.update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        x0, x1 = self.views
        p0 = self.forward(x0)
        z0 = self.forward_momentum(x0)
        p1 = self.forward(x1)
        z1 = self.forward_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        self.step_i += 1
        return float(loss.detach())


def _lr(cfg: Any) -> float:
    o = cfg.optim
    return o.blr * cfg.train.batch_size / o.lr_scale_batch  # PretrainModule.scaled_lr, one process


def timed(impl: Any, steps: int, batch: int) -> dict[str, Any]:
    u0, s0, f0 = _usage()
    t0 = time.perf_counter()
    losses = [impl.step() for _ in range(steps)]
    wall = time.perf_counter() - t0
    u1, s1, f1 = _usage()
    cpu = (u1 - u0) + (s1 - s0)
    return {"img_per_s": round(steps * batch / wall, 2), "img_per_cpu_s": round(steps * batch / cpu, 2),
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "kernel_share": round((s1 - s0) / cpu, 4),
            "minflt_per_step": round((f1 - f0) / steps, 1), "last_loss": round(losses[-1], 5)}


def worker(name: str, conn: Any, sets: list[str], threads: int, warmup: int, total: int, keep: bool) -> None:
    """One implementation in its own process (so each has its own allocator state and settings): build, warm up,
    then answer ('steps', n) with a timed round, ('augment', reps) with byon's view timing, None to stop."""
    torch.set_num_threads(threads)
    if name == "byon" and keep:
        keep_freed_memory()  # what byon's engine does for a CPU run (engine.run.build)
    cfg = load_config(None, {"method": "byol"} | PROTOCOLS[PROTOCOL].overrides(), sets=sets)
    batch = cfg.train.batch_size
    raw = torch.randint(0, 256, (batch, INFO.in_chans, INFO.img_size, INFO.img_size), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    method, _ = build_method(cfg, INFO)
    views = tuple(v.contiguous() for v in method.views(raw, step_generator(0, 0, 0)))  # byon's BYOL views, once
    del method
    torch.manual_seed(0)
    impl = Byon(cfg, views, raw, total) if name == "byon" else Lightly(cfg, views, total)
    for _ in range(warmup):
        impl.step()
    conn.send({"views_sum": float(sum(v.double().sum() for v in views)), "batch": batch,
               "encoder_passes": cfg.method_cfg.encoder_passes})
    while (msg := conn.recv()) is not None:
        kind, n = msg
        conn.send(timed(impl, n, batch) if kind == "steps" else impl.augment(n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each implementation per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of each before the first round")
    ap.add_argument("--augment-reps", type=int, default=5, help="timed calls of byon's BYOL view pair")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="byon config override, e.g. byol.encoder_passes=joint")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="byon's process without the engine's malloc settings (what byon did before them)")
    ap.add_argument("--out", default="benchmarks/results/lightly-byol-cpu.json")
    ap.add_argument("--md", default="benchmarks/lightly-byol-cpu.md", help="'' to write no note")
    a = ap.parse_args()
    import lightly

    total = a.warmup + a.rounds * a.steps
    ctx = mp.get_context("spawn")
    names = ("byon", "lightly")
    conns, procs = {}, {}
    for n in names:
        here, there = ctx.Pipe()
        procs[n] = ctx.Process(target=worker, args=(n, there, a.set, a.threads, a.warmup, total,
                                                                    not a.glibc_defaults), daemon=True)
        procs[n].start()
        conns[n] = here
    ready = {n: conns[n].recv() for n in names}  # both built and warmed up
    if ready["byon"]["views_sum"] != ready["lightly"]["views_sum"]:
        raise RuntimeError(f"the two processes drew different views: {ready}")
    batch = ready["byon"]["batch"]

    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    load = MachineLoad()
    load.start()
    for r in range(a.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            conns[n].send(("steps", a.steps))
            rounds[n].append(conns[n].recv())
            print(f"round {r} {n}: {rounds[n][-1]}", flush=True)
    load.stop()  # the worker processes are this one's children: MachineLoad counts them as its own
    conns["byon"].send(("augment", a.augment_reps))
    augment = conns["byon"].recv()
    for n in names:
        conns[n].send(None)
        procs[n].join()

    med = {n: {k: round(statistics.median(x[k] for x in rs), 4 if k == "kernel_share" else 2)
               for k in ("img_per_s", "img_per_cpu_s", "minflt_per_step", "kernel_share")} for n, rs in rounds.items()}
    ratio = round(med["byon"]["img_per_s"] / med["lightly"]["img_per_s"], 3)
    ratio_cpu = round(med["byon"]["img_per_cpu_s"] / med["lightly"]["img_per_cpu_s"], 3)
    torch.set_num_threads(a.threads)  # for hardware()'s thread count
    record = {
        "name": "lightly-byol-cpu", "protocol": f"{PROTOCOL} shapes: vit-micro, 28 px, 1 channel, batch {batch}",
        "command": "PYTHONPATH=$PWD/src /tmp/lightly-env/bin/python " + shlex.join(["scripts/bench/lightly-byol.py"]
                                                                                   + sys.argv[1:]),
        "augmentation": "excluded from both steps (same pre-made float views); byon's timed apart (byon_augment)",
        "processes": "one per implementation, interleaved rounds; lightly's with glibc's malloc defaults, byon's "
                     + ("with them too (--glibc-defaults)" if a.glibc_defaults else
                        "with the engine's CPU malloc settings (engine/cpu_memory.py)"),
        "threads": a.threads, "rounds": a.rounds, "steps_per_round": a.steps, "warmup_steps": a.warmup,
        "byon_sets": a.set, "byon_encoder_passes": ready["byon"]["encoder_passes"],
        "median": med, "ratio_byon_over_lightly": ratio, "ratio_byon_over_lightly_per_cpu_s": ratio_cpu,
        "per_round": rounds, "byon_augment": augment,
        "machine": {"other_cpu_share": load.share, "loadavg_1m": load.load, "busy_threshold": BUSY_SHARE,
                    "quiet": None if load.share is None else load.share <= BUSY_SHARE},
        "commit": git_commit(), "dirty": git_dirty(), "hardware": hardware(), "cpu_model": _cpu_model(),
        "torch": str(torch.__version__), "lightly": lightly.__version__, "timm": __import__("timm").__version__,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("median", "ratio_byon_over_lightly", "ratio_byon_over_lightly_per_cpu_s",
                                             "byon_augment", "machine")}, indent=2))
    if a.md:
        Path(a.md).write_text(note(record, str(out)))
    return 0


def note(r: dict[str, Any], out: str) -> str:
    b, lt = r["median"]["byon"], r["median"]["lightly"]
    quiet = r["machine"]["quiet"]
    share = r["machine"]["other_cpu_share"]
    busy = (f"taken alone (other processes {100 * share:.0f} % of the CPU)" if quiet else
            f"**not taken alone**: other processes used {100 * (share or 0):.0f} % of the machine's CPU during the "
            f"window (quiet: {str(quiet).lower()}); the interleaved rounds keep the ratio fair, the absolute figures "
            f"are low")
    rows = "\n".join(
        f"| {n} | {m['img_per_s']:.1f} | {m['img_per_cpu_s']:.1f} | {m['minflt_per_step']:.0f} | "
        f"{100 * m['kernel_share']:.1f} % |" for n, m in (("byon", b), ("lightly", lt)))
    return f"""# BYOL: byon against lightly, one CPU thread

{r['protocol']}; {r['threads']} thread; {r['rounds']} interleaved rounds × {r['steps_per_round']} steps of each after
{r['warmup_steps']} warm-up steps; byon {r['commit'][:8]} (BYOL encoder passes: {r['byon_encoder_passes']}), lightly
{r['lightly']}, timm {r['timm']}, torch {r['torch']}; {r['cpu_model']} ({r['hardware']}); {r['date']}.
{busy}.

| implementation | img/s (median) | img per CPU-second | minor page faults / step | kernel share of CPU |
|---|---|---|---|---|
{rows}

**byon / lightly: {r['ratio_byon_over_lightly']:.3f}×** by wall clock, {r['ratio_byon_over_lightly_per_cpu_s']:.3f}× per
CPU-second. Each implementation runs in its own process ({r['processes']}).

What a step is (scripts/bench/lightly-byol.py's docstring): the model step only — both take the same pre-made
float views (augmentation excluded from both). byon's own BYOL augmentation (both views of a uint8 batch) runs at
{r['byon_augment']['view_pairs_img_per_s']:.0f} img/s on its own, on top of the step. byon's step is the engine's
(guard, foreach AdamW, EMA); lightly's is its BYOL example on a timm ViT of the same dims with byon's head sizes.

lightly is installed only in a throw-away environment that shares byon's venv (the script's docstring says how);
it is not a byon dependency. Command (from the repository root):

    {r['command']}

Record: `{out}` (per-round figures, versions, machine load).

Before byon's CPU runs kept freed memory mapped (engine/cpu_memory.py, `keep_freed_memory`), byon's step took
175-195k minor page faults and 9 % of its CPU time in the kernel, against lightly's 88-98k and 4-5 %: 0.95× lightly
per CPU-second (2 interleaved rounds × 10 steps in one shared process, busy machine). `--glibc-defaults` measures
byon without the settings.
"""


if __name__ == "__main__":
    sys.exit(main())
