"""One LightningModule that trains any method: the method owns the algorithm, this owns the loop."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from byon.config import RunConfig
from byon.data import DataInfo
from byon.data.stream import StreamLoader
from byon.draws import SampleDraws
from byon.engine.guard import NonFiniteGuard
from byon.engine.loader import RunLoader
from byon.engine.optim import cosine_schedule, param_groups, warmup_cosine
from byon.methods.base import Method
from byon.methods.context import step_context
from byon.nn.ema import ema_update
from byon.provenance import run_metadata


class PretrainModule(L.LightningModule):
    """Wraps `method`: per-step lr/wd schedules, batched augmentation, EMA, non-finite guard, logging."""

    def __init__(self, cfg: RunConfig, method: Method, info: DataInfo, loader: RunLoader | StreamLoader) -> None:
        super().__init__()
        self.cfg, self.method, self.info, self.loader = cfg, method, info, loader
        self.register_buffer("_mean", torch.tensor(info.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(info.std).view(1, -1, 1, 1), persistent=False)
        self.guard = NonFiniteGuard(cfg.train.max_bad_steps)
        self._step_out: dict[str, Tensor] = {}
        self._t_last: float | None = None
        self._images_since = 0
        self.images_per_s: list[float] = []
        self.last_logs: dict[str, float] = {}
        # training wall time summed over every segment of a run (a resumed run adds to its checkpoint's)
        self.train_time_before = 0.0
        self.segments = 1
        self._fit_t0: float | None = None

    # --- schedules -------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return max(len(self.loader), 1)

    @property
    def total_steps(self) -> int:
        """Schedules span the configured epochs; `train.max_steps` only stops early (so a stopped run
        resumes onto the same schedule)."""
        return max(self.cfg.train.epochs * self.steps_per_epoch, 1)

    @staticmethod
    def scaled_lr(cfg: RunConfig, world_size: int) -> float:
        """optim.lr when set, else blr · global batch / lr_scale_batch, global batch = per-device batch ·
        processes (devices · nodes)."""
        o = cfg.optim
        if o.lr is not None:
            return o.lr
        return o.blr * cfg.train.batch_size * world_size / o.lr_scale_batch

    def base_lr(self) -> float:
        return self.scaled_lr(self.cfg, self.trainer.world_size)

    def _fused(self) -> bool:
        """Fused AdamW on CUDA: one kernel for the update, and the skip decision stays on the device."""
        return self.device.type == "cuda"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = param_groups(self.method, o.weight_decay)
        fused = self._fused()
        return torch.optim.AdamW(groups, lr=self.base_lr(), betas=tuple(o.betas), fused=fused or None,
                                 foreach=None if fused else True)

    def _apply_schedules(self, step: int) -> float:
        o = self.cfg.optim
        warmup = int(round(o.warmup_epochs * self.steps_per_epoch))
        lr = warmup_cosine(step, self.total_steps, warmup, self.base_lr(), o.min_lr)
        wd = (o.weight_decay if o.weight_decay_end is None
              else cosine_schedule(step, self.total_steps, o.weight_decay, o.weight_decay_end))
        for g in self.optimizers().param_groups:
            g["lr"] = lr
            if g.get("apply_wd_schedule"):
                g["weight_decay"] = wd
        return lr

    # --- the step --------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        raw, labels = batch
        step = self.global_step
        lr = self._apply_schedules(step)
        self.guard.snapshot(self.method)
        out = self.shard_step(raw, labels, step, self.global_rank, self.trainer.world_size)
        loss = out["loss"]
        self._step_out = {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}
        if self._is_log_step(step):
            self._log_step(out, lr, step, raw.shape[0])
        self._images_since += raw.shape[0] * self.trainer.world_size
        # Always hand the loss back, finite or not: under DDP every rank must run backward (its gradient
        # all-reduce), so the skip decision is taken after it, in `on_before_optimizer_step`.
        return loss

    def shard_step(self, raw: Tensor, labels: Tensor, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        """One rank's part of a step: augment its shard (uint8 (B, C, H, W), on the training device) and run
        the method. The loader deals the global batch round-robin, so local sample i sits at global position
        i·world_size + rank; every draw of sample i comes from the (seed, step, that position) generator
        (`byon.draws.SampleDraws`): 1 or N processes draw the same crops, masks and noise for the same image,
        and a rerun or a resume draws them again."""
        positions = range(rank, raw.shape[0] * world_size, world_size)
        g = SampleDraws(self.cfg.train.seed, step, positions, raw.device)
        # streamed batches were random-resized-cropped when decoded (`StreamLoader.decode_crop`)
        ctx = step_context(self.cfg.data, self._mean, self._std, g, step, self.current_epoch, self.total_steps,
                           crop=not getattr(self.loader, "decode_crop", False))
        batch = {"raw": raw, "label": labels}
        if self.method.augment_batch:  # else the method draws its own views (BYOL)
            batch["image"] = ctx.augment(raw)
        return self.method(batch, ctx)

    def _is_log_step(self, step: int) -> bool:
        # Lightning writes the logs of step s when (s + 1) % log_every_n_steps == 0, or when stopping
        return ((step + 1) % max(self.cfg.train.log_every_n_steps, 1) == 0 or self.trainer.should_stop
                or step + 1 == self.final_step)

    @property
    def final_step(self) -> int:
        """The step count at which this run's training ends (its last step's logs are always written)."""
        planned = self.total_steps if self.cfg.train.epochs else 0
        return min(planned, self.cfg.train.max_steps) if self.cfg.train.max_steps else planned

    def all_reduce(self, t: Tensor, op: str) -> Tensor:
        """In-place all-reduce over ranks ("sum", "mean" or "max"); no barrier, so on NCCL it is queued on
        the stream without a host sync (Lightning's `strategy.reduce` adds a barrier)."""
        if self.trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return t
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.div_(self.trainer.world_size) if op == "mean" else t

    def _log_step(self, out: dict[str, Tensor], lr: float, step: int, batch_size: int) -> None:
        """On log steps only: the method's scalars averaged over ranks (one all-reduce) and moved to the host
        once. Lightning `.item()`s every progress-bar value after every batch, so device tensors logged every
        step would cost a device sync per step; host tensors cost nothing."""
        keys = [k for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1]
        vals = torch.stack([out[k].detach().float().reshape(()) for k in keys])
        vals = self.all_reduce(vals, "mean").cpu()
        logs = {f"train/{k}": v for k, v in zip(keys, vals)}
        logs["train/lr"] = torch.tensor(lr)
        if self.method.ema_pairs():  # the momentum of the update that follows this step
            logs["train/ema_momentum"] = torch.tensor(self.method.ema_momentum(step + 1, self.total_steps))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("loss", logs["train/loss"], prog_bar=True, logger=False, batch_size=batch_size)
        self.last_logs = {k: float(v) for k, v in logs.items()}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard (engine/guard.py), after backward and DDP's gradient all-reduce, before clipping
        and the update."""
        self.guard.check(self, optimizer, self._step_out)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """The update, then the EMA targets. The EMA runs here rather than in `on_train_batch_end` because
        callbacks' batch-end hooks (the step-interval checkpoint) run before the module's: a checkpoint
        must hold the targets after this step's update."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        pairs = self.method.ema_pairs()
        # global_step counts this step only once the hook returns; the momentum is for step + 1
        m = self.guard.ema_momentum(self.method.ema_momentum(self.global_step + 1, self.total_steps)) if pairs else None
        if m is not None:
            ema_update(pairs, m)
        self.guard.end_step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step == self.final_step:  # Lightning writes a step's logs on its log steps or when stopping
            self.trainer.should_stop = True  # the run ends here anyway: now logs/metrics.csv has its last step
        if self.global_step % max(self.cfg.train.log_every_n_steps, 1) == 0:
            self.guard.read(self, log_count=True)
        self._throughput()

    def on_train_end(self) -> None:
        self.guard.read(self)

    def _throughput(self) -> None:
        every = max(self.cfg.train.log_every_n_steps, 1)
        if self.global_step % every:
            return
        now = time.perf_counter()
        if self._t_last is not None and self._images_since:
            ips = self._images_since / (now - self._t_last)
            if self.global_step > every:  # skip the warm-up window
                self.images_per_s.append(ips)
            self.log("img/s", torch.tensor(ips), prog_bar=True, logger=False, rank_zero_only=True)
            self.log("train/images_per_s", torch.tensor(ips), on_step=True, rank_zero_only=True)
        self._t_last, self._images_since = now, 0

    def on_fit_start(self) -> None:
        self.loader.stage(self.device)  # now the process knows its device: dataset to the GPU, or pinned batches

    def on_train_start(self) -> None:
        self._fit_t0 = time.perf_counter()

    def train_time_s(self) -> float:
        """Training wall time of the whole run so far, over all resumed segments."""
        now = time.perf_counter()
        return self.train_time_before + (now - self._fit_t0 if self._fit_t0 is not None else 0.0)

    def on_train_epoch_start(self) -> None:
        self.loader.set_epoch(self.current_epoch)
        self._t_last, self._images_since = time.perf_counter(), 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["byon"] = run_metadata(self.cfg, self.info)
        self.guard.read(self, stop=False)
        checkpoint["byon"]["skipped_steps"] = self.guard.skipped_steps
        checkpoint["byon"]["train_time_s"] = self.train_time_s()
        checkpoint["byon"]["segments"] = self.segments
        # rows logged before this checkpoint must survive a kill: a resume keeps only those
        for lg in self.trainer.loggers:
            lg.save()
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        if "combined_loader" in fit_state:
            fit_state["combined_loader"] = [self.loader_position(len(self.loader))]

    def loader_position(self, batches_per_epoch: int) -> dict[str, int]:
        """The loader state to resume from: Lightning pre-fetches a batch, so the loader's own counter is
        one ahead mid-epoch; the loop's count of processed batches is the true data position."""
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = self.current_epoch
        if done >= batches_per_epoch:
            return {"epoch": epoch + 1, "batches": 0}
        return {"epoch": epoch, "batches": done}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("byon", {})
        self.guard.skipped_steps = int(meta.get("skipped_steps", 0))
        # None: written before byon kept the time; the run's total is then unknown
        before = meta.get("train_time_s")
        self.train_time_before = float(before) if before is not None else math.nan
        self.segments = int(meta.get("segments", 1)) + 1

    def steady_images_per_s(self) -> float:
        xs = self.images_per_s
        return float(sum(xs) / len(xs)) if xs else math.nan
