"""`train`: pretrain a method into a run directory (`byon.rundir` reads one back)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.flop_counter import FlopCounterMode

from byon.analysis import RUN_FIGURES
from byon.config import RunConfig, save_config
from byon.data import DataInfo, ImageData, channel_stats, data_info, load_dataset
from byon.data.datasets import STREAMABLE, narrow, open_split, plan_storage
from byon.data.stream import DEFAULT_SIZE, STATS_IMAGES, StreamData, StreamLoader
from byon.draws import SampleDraws
from byon.engine.callbacks import AtomicCheckpointIO, RunCheckpoint
from byon.engine.cpu_memory import keep_freed_memory
from byon.engine.loader import RunLoader
from byon.engine.logging import ResumableCSVLogger
from byon.engine.module import PretrainModule
from byon.engine.monitor import online_monitor
from byon.engine.processes import ProcessPlan, plan_processes
from byon.engine.runlock import RunLock, check_out, launch_leader
from byon.errors import ByonError, Interrupted
from byon.methods import build_method
from byon.methods.base import Method
from byon.methods.context import step_context
from byon.nn.vit import EncoderShape
from byon.provenance import git_dirty, hardware, run_metadata
from byon.rundir import (
    checkpoints_newest_first,
    read_checkpoint,
    read_newest_checkpoint,
    remove_stale_temp_files,
    write_json,
)

log = logging.getLogger(__name__)


def compile_blocks(method: torch.nn.Module) -> int:
    """`train.compile`: torch.compile every transformer block in place (regional compilation) and return how
    many. Blocks hold nearly all the FLOPs and repeat, so one compiled graph serves each kind; the corruption
    code around them draws from a `torch.Generator`, which would only break a whole-method graph. The
    modules stay in place, so state-dict keys and checkpoints are unchanged."""
    n = 0
    for m in method.modules():
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, torch.nn.ModuleList | torch.nn.Sequential):  # timm keeps its blocks in a Sequential
            for blk in blocks:
                blk.compile()
                n += 1
    return n


def load_train_data(cfg: RunConfig) -> tuple[ImageData | StreamData, ImageData]:
    """The training split, in memory or streamed (`data.storage`, announced in the run's first line), and the
    decoded images its channel statistics and data-fitted buffers are taken from: the split itself, or a
    sample of a streamed one."""
    d = cfg.data
    size = d.image_size or cfg.model.img_size or DEFAULT_SIZE
    # a folder is listed once: the storage choice reads the listing the streamed split is taken from
    listed = open_split(d.dataset, "train", d.root, size) if d.dataset in STREAMABLE else None
    storage, line = plan_storage(d.dataset, d.storage, listed, d.image_size, d.memory_budget_gb, d.num_workers)
    rank_zero_info(line)
    if listed is not None and storage == "stream":
        data = narrow(listed, "train", d.subset, cfg.train.seed, d.val_size, d.val_seed)
        return data, data.sample(STATS_IMAGES, d.on_bad_file)
    data = load_dataset(d.dataset, "train", root=d.root, subset=d.subset, seed=cfg.train.seed,
                        image_size=d.image_size, on_bad_file=d.on_bad_file, val_size=d.val_size,
                        val_seed=d.val_seed)
    return data, data


def flops_per_image(method: Method, info: DataInfo, cfg: RunConfig, batch: int = 4) -> float:
    """Training FLOPs (forward + backward) per image, counted by torch.utils.flop_counter on one step."""
    raw = torch.randint(0, 256, (batch, info.in_chans, info.img_size, info.img_size), dtype=torch.uint8)
    images = (raw.float() / 255 - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    ctx = step_context(cfg.data, info.mean, info.std, SampleDraws(0, 0, range(batch)))
    inputs = {"raw": raw, "label": torch.zeros(batch, dtype=torch.long)} | ({"image": images} if method.augment_batch
                                                                            else {})
    method = copy.deepcopy(method).train()  # a copy: BN statistics and grads of the real one stay untouched
    counter = FlopCounterMode(display=False)
    with counter:
        out = method(inputs, ctx)
        out["loss"].backward()
    return counter.get_total_flops() / batch


def train(cfg: RunConfig, out: str | Path, resume: str | None = None, callbacks: tuple = (),
          overwrite: bool = False, per_core: bool = False) -> Path:
    """Pretrain `cfg.method` into run directory `out`; returns it. `callbacks`: extra Lightning callbacks
    (e.g. the speed benchmark's step timer). A fresh run needs `out` empty or absent, or `overwrite` (its
    contents are deleted once the run is set up); `resume` ('auto' or a checkpoint path) continues one. The run
    holds `out`'s lock (`engine.runlock`) while it trains. `per_core`: `train.devices: auto` on a multi-core CPU
    starts one DDP process per core (`engine.processes`; `byon pretrain` asks for it, as Lightning re-runs the
    command line for the other processes)."""
    lock = RunLock(Path(out))
    try:
        return _train(cfg, Path(out), resume, callbacks, overwrite, lock, per_core)
    finally:
        lock.release()


def _train(cfg: RunConfig, out: Path, resume: str | None, callbacks: tuple, overwrite: bool, lock: RunLock,
           per_core: bool) -> Path:
    run = build(cfg, out, resume, callbacks, overwrite, lock, per_core)
    wall, stopped = fit(run)
    summarise(run, wall, stopped)
    if stopped:
        total = min(run.module.total_steps, cfg.train.max_steps or run.module.total_steps)
        raise Interrupted(f"interrupted by {signal.Signals(stopped).name} after step {run.trainer.global_step} of "
                          f"{total}; saved checkpoints/last.ckpt and a summary marked interrupted — continue with "
                          f"--resume auto", 128 + stopped)
    return out


@dataclass
class Run:
    """A run set up to train (`build`): what `fit` trains and `summarise` reports."""

    cfg: RunConfig
    out: Path
    data: ImageData | StreamData
    method: Method
    shape: EncoderShape
    module: PretrainModule
    trainer: L.Trainer
    ckpt_cb: RunCheckpoint
    ckpt_path: str | None  # the checkpoint to resume from
    resume_step: int | None
    spoilt_last: bool  # the newer last.ckpt did not read: `fit` replaces it
    precision: str
    global_batch: int
    lr: float
    flops: float | None  # per image, counted on global rank 0
    started: dict[str, Any]  # the code the process runs: commit, dirty, version, torch


def build(cfg: RunConfig, out: Path, resume: str | None, callbacks: tuple, overwrite: bool, lock: RunLock,
          per_core: bool = False) -> Run:
    """Data, method (fitted data state or the resumed buffers), Lightning module, trainer and the run directory
    (checked, locked, config.yaml written). `train.devices: auto` is resolved first (`engine.processes`), and
    the run's config holds what it resolved to."""
    cfg = with_plan(cfg, plan_processes(cfg.train, per_core))
    leader = launch_leader()
    if leader:
        check_out(out, resume, overwrite)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.accelerator == "cpu" or not torch.cuda.is_available():
        keep_freed_memory()  # no per-step page faults from glibc handing activations back (engine/cpu_memory.py)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    data, sample = load_train_data(cfg)
    mean, std = channel_stats(sample.images)
    info = data_info(data, mean, std)
    method, shape = build_method(cfg, info)

    ckpt_path, resume_step, resumed, spoilt_last = None, None, None, False
    if resume == "auto":  # the newest readable checkpoint of the run directory, or a fresh start when it has none
        if checkpoints_newest_first(out):
            path, resumed = read_newest_checkpoint(out)
            ckpt_path = str(path)
            spoilt_last = not path.name.startswith("last")  # the newer last.ckpt did not read: replace it below
    elif resume:
        ckpt_path = resume
        if not Path(ckpt_path).is_file():
            raise ByonError(f"--resume: checkpoint '{ckpt_path}' not found; give a .ckpt file or 'auto'")
        resumed = read_checkpoint(ckpt_path)
    if resumed is not None:
        resume_step = check_compatible(cfg, resumed)
    # data-fitted buffers (l-DAE's PCA basis): fitted once, then checkpointed
    load_buffers(method, resumed["state_dict"]) if resumed is not None else method.setup_data(sample)
    del resumed  # trainer.fit reads the checkpoint itself

    accelerator = cfg.train.accelerator
    precision = cfg.train.precision
    if precision == "auto":
        use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        precision = "bf16-mixed" if use_cuda else "32-true"
    elif "bf16" in precision and not torch.cuda.is_available():
        raise ByonError(f"precision '{precision}' needs a CUDA GPU (bf16 on CPU is ~100x slower); use 32-true")

    world = int(cfg.train.devices) * cfg.train.num_nodes if str(cfg.train.devices).isdigit() else 1
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    if str(cfg.train.strategy).startswith("fsdp") and method.ema_pairs():
        raise ByonError(f"--strategy {cfg.train.strategy} shards the parameters, but {cfg.method}'s EMA teacher update "
                        f"pairs whole online and target tensors; use --strategy ddp for {cfg.method}")
    if cfg.train.sync_bn and on_cpu and (world > 1 or str(cfg.train.devices) == "-1"):
        raise ByonError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernels); "
                        "drop train.sync_bn for CPU processes")
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0))) if world > 1 else 0
    if isinstance(data, StreamData):
        loader: RunLoader | StreamLoader = StreamLoader(
            data, cfg.train.batch_size, shuffle=True, drop_last=True, seed=cfg.train.seed, rank=rank, world_size=world,
            num_workers=cfg.data.num_workers, crop_scale=cfg.data.crop_scale, crop_ratio=cfg.data.crop_ratio,
            on_bad_file=cfg.data.on_bad_file)
    else:
        loader = RunLoader(data, cfg.train.batch_size, shuffle=True, drop_last=True, seed=cfg.train.seed, rank=rank,
                           world_size=world)
    module = PretrainModule(cfg, method, info, loader)

    # Step-interval checkpoints can fall in the same epoch, so their names carry the step.
    name = "epoch={epoch:04d}-step={step:08d}" if cfg.train.ckpt_every_steps else "epoch={epoch:04d}"
    ckpt_cb = RunCheckpoint(dirpath=out / "checkpoints", filename=name, auto_insert_metric_name=False,
                            save_last=True, every_n_epochs=cfg.train.ckpt_every_epochs,
                            every_steps=cfg.train.ckpt_every_steps, save_top_k=cfg.train.keep_last,
                            monitor="step", mode="max")
    loggers = [ResumableCSVLogger(out, name="logs", version="", resume_step=resume_step),
               TensorBoardLogger(out, name="logs", version="tb", default_hp_metric=False)]
    try:
        trainer = L.Trainer(
            accelerator=accelerator, devices=cfg.train.devices, num_nodes=cfg.train.num_nodes,
            strategy=cfg.train.strategy, precision=precision, max_epochs=cfg.train.epochs,
            max_steps=cfg.train.max_steps or -1, logger=loggers,
            callbacks=[ckpt_cb, *callbacks, *online_monitor(cfg, info, isinstance(data, StreamData))],
            sync_batchnorm=cfg.train.sync_bn,
            plugins=[AtomicCheckpointIO()], log_every_n_steps=cfg.train.log_every_n_steps,
            enable_progress_bar=cfg.train.progress, gradient_clip_val=cfg.optim.grad_clip,
            use_distributed_sampler=False, enable_model_summary=False, num_sanity_val_steps=0,
            deterministic=False, benchmark=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ByonError(f"the trainer settings (train.accelerator/devices/strategy/precision) are invalid: "
                        f"{msg}") from None
    if leader:
        lock.acquire()
        check_out(out, resume, overwrite)  # again under the lock: a run that just ended may have filled it
        if overwrite:
            lock.clear()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out / "checkpoints")
    # The loader is rank-sharded; its rank must come from the launched process.
    loader.rank, loader.world_size = trainer.global_rank, trainer.world_size

    global_batch = cfg.train.batch_size * trainer.world_size
    lr = PretrainModule.scaled_lr(cfg, trainer.world_size)
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml")
        loggers[1].log_hyperparams(cfg.to_dict())  # logs/tb/hparams.yaml: the resolved config, not `{}`
        rank_zero_info(f"global batch {global_batch} = {cfg.train.batch_size} per device x {trainer.world_size} "
                       f"processes; lr {lr:.4g} = " + ("optim.lr" if cfg.optim.lr is not None else
                       f"optim.blr {cfg.optim.blr:g} x {global_batch} / {cfg.optim.lr_scale_batch}"))
    flops = flops_per_image(method, info, cfg) if trainer.is_global_zero else None
    if cfg.train.compile:  # after the FLOP count, which runs eagerly on a copy
        compile_blocks(method)
    # the code this process runs is the tree at its start: later commits must not be credited with the run
    started = {"dirty": git_dirty()} | {k: v for k, v in run_metadata(cfg, info).items()
                                        if k in ("version", "commit", "torch")}
    return Run(cfg, out, data, method, shape, module, trainer, ckpt_cb, ckpt_path, resume_step, spoilt_last,
               precision, global_batch, lr, flops, started)


def with_plan(cfg: RunConfig, plan: ProcessPlan) -> RunConfig:
    """A copy of `cfg` with `train.devices: auto` resolved as `plan` says (announced on the run's first line)."""
    if plan.line:
        rank_zero_info(plan.line)
    cfg = copy.deepcopy(cfg)
    t = cfg.train
    t.devices, t.strategy, t.num_threads, t.batch_size = plan.devices, plan.strategy, plan.num_threads, plan.batch_size
    return cfg


def fit(run: Run) -> tuple[float, int | None]:
    """Train, then make sure last.ckpt holds the final state. Returns (wall seconds, the stopping signal or None)."""
    trainer, module, out = run.trainer, run.module, run.out
    t0 = time.perf_counter()
    with stop_signals(trainer) as stopped:
        try:
            trainer.fit(module, train_dataloaders=module.loader, ckpt_path=run.ckpt_path)
        except SIGTERMException:
            stopped.setdefault("signal", signal.SIGTERM)
    wall = time.perf_counter() - t0
    last = out / "checkpoints" / "last.ckpt"
    # --epochs 0 (the random-init reference run) saves nothing, and step-interval saving can end between saves
    # (a resumed run that had nothing left to do keeps its file untouched)
    unsaved = run.ckpt_cb.last_step_saved() != trainer.global_step and trainer.global_step != run.resume_step
    if not last.is_file() or unsaved or (run.spoilt_last and run.ckpt_cb.last_step_saved() == 0):
        trainer.strategy.connect(module) if trainer.model is None else None
        trainer.save_checkpoint(last, weights_only=False)  # a full, resumable checkpoint (and no info line)
    return wall, stopped.get("signal")


def summarise(run: Run, wall: float, stopped: int | None) -> None:
    """Global rank 0: the method's run-end artefacts and figures, and summary.json."""
    cfg, method, module, trainer, out = run.cfg, run.method, run.module, run.trainer, run.out
    if not trainer.is_global_zero:
        return
    for name, obj in method.run_files().items():
        write_json(out / name, obj)
    for name in method.run_figures:
        RUN_FIGURES[name](method, out)
    summary = {
        "method": cfg.method, "dataset": cfg.data.dataset, "model": cfg.model.preset,
        "encoder": run.shape.__dict__, "epochs": cfg.train.epochs, "steps": trainer.global_step,
        "global_batch": run.global_batch, "per_device_batch": cfg.train.batch_size, "lr": run.lr,
        "wall_time_s": _finite(module.train_time_s()),
        "segment_wall_time_s": round(wall, 2), "segments": module.segments,
        "images_per_s": _finite(module.steady_images_per_s()), "flops_per_image": run.flops,
        "skipped_steps": module.guard.skipped_steps, "last_logs": module.last_logs, "hardware": hardware(),
        "precision": run.precision, "world_size": trainer.world_size,
        "data_dirs": {"train": run.data.source},  # the folder actually read (data.root may be unset)
        # streamed: the images left out as unreadable (data.on_bad_file=skip) by this process's loader
        "data_storage": "stream" if isinstance(run.data, StreamData) else "memory",
        **({"skipped_images": module.loader.skipped} if isinstance(module.loader, StreamLoader) else {}),
        **({"interrupted": signal.Signals(stopped).name} if stopped else {}),
        # the values the method settled for its config's None defaults (e.g. l-DAE's latent dimension)
        **({"resolved": method.resolved()} if method.resolved() else {}),
    } | run.started
    write_json(out / "summary.json", summary)


@contextlib.contextmanager
def stop_signals(trainer: L.Trainer) -> Iterator[dict[str, int]]:
    """While `trainer.fit` runs: SIGTERM (a scheduler's preemption, `timeout`) and SIGINT (Ctrl-C) stop the run at
    the next step boundary, after `RunCheckpoint` saved it, instead of killing it mid-step; a second SIGINT
    stops at once. Yields {"signal": number} once one arrived. Lightning's own SIGTERM handler (which sets
    `trainer.received_sigterm`) runs alongside; SIGINT sets the same flag."""
    stopped: dict[str, int] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and "signal" in stopped:
            raise KeyboardInterrupt
        stopped.setdefault("signal", signum)
        trainer._signal_connector.received_sigterm = True  # the flag Lightning's loops stop on

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield stopped
        return
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _finite(x: float) -> float | None:
    return None if x != x else round(x, 2)


def load_buffers(method: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """A resumed method's saved buffers from the checkpoint's `state_dict`, loaded before anything runs it
    (the FLOP count does, ahead of `trainer.fit`, which loads the rest)."""
    names = {n for n, _ in method.named_buffers()}
    method.load_state_dict({k: v for k, v in ((k.removeprefix("method."), v) for k, v in state.items())
                            if k in names}, strict=False)


def check_compatible(cfg: RunConfig, ckpt: dict[str, Any]) -> int:
    """Resuming (from the read checkpoint `ckpt`) with another method or encoder shape is an error, not a
    silent partial load. Returns the checkpoint's global step."""
    old = ckpt["byon"]["config"]
    if old["method"] != cfg.method:
        raise ByonError(f"--resume: checkpoint was trained with method '{old['method']}', not '{cfg.method}'; "
                        f"use --method {old['method']} or a new --out")
    new = cfg.to_dict()["model"]
    defaults = RunConfig().to_dict()["model"]  # a key the checkpoint predates had its default then
    diff = [k for k in new if old["model"].get(k, defaults[k]) != new[k]]
    if diff:
        raise ByonError(f"--resume: the model differs from the checkpoint's in {', '.join(diff)}; resume with "
                        f"the same model settings or start a new --out")
    return int(ckpt.get("global_step", 0))
