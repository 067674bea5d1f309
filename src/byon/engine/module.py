"""One LightningModule that trains any method: the method owns the algorithm, this owns the loop."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from byon.config import RunConfig
from byon.data import DataInfo
from byon.data.transforms import augment
from byon.engine.optim import cosine_schedule, param_groups, warmup_cosine
from byon.errors import ByonError
from byon.methods.context import StepContext, step_generator
from byon.nn.ema import ema_update
from byon.provenance import run_metadata

log = logging.getLogger(__name__)


class NonFiniteLossError(ByonError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class PretrainModule(L.LightningModule):
    """Wraps `method`: per-step lr/wd schedules, batched augmentation, EMA, non-finite guard, logging."""

    def __init__(self, cfg: RunConfig, method: torch.nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg, self.method, self.info = cfg, method, info
        self.register_buffer("_mean", torch.tensor(info.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(info.std).view(1, -1, 1, 1), persistent=False)
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.max_consecutive_skips = cfg.train.max_bad_steps
        self._step_bad = False
        # the device-side guard (fused AdamW): this step's bad flag and the counters, read at log steps
        self._bad: Tensor | None = None
        self._guard: dict[str, Tensor] = {}
        self._skips_logged = 0
        self._step_out: dict[str, Tensor] = {}
        self._buffers_before: list[Tensor] = []
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
        # A skipped step must leave no trace, buffers included (BN statistics, histograms).
        self._buffers_before = [b.detach().clone() for b in self.method.buffers()]
        out = self.shard_step(raw, labels, step, self.global_rank)
        loss = out["loss"]
        self._step_out = {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}
        if self._is_log_step(step):
            self._log_step(out, lr, step, raw.shape[0])
        self._images_since += raw.shape[0] * self.trainer.world_size
        # Always hand the loss back, finite or not: under DDP every rank must run backward (its gradient
        # all-reduce), so the skip decision is taken after it, in `on_before_optimizer_step`.
        return loss

    def shard_step(self, raw: Tensor, labels: Tensor, step: int, rank: int) -> dict[str, Tensor]:
        """One rank's part of a step: augment its shard (uint8 (B, C, H, W), on the training device) and run
        the method. Every draw comes from the (seed, step, rank) generator: ranks draw different crops, masks
        and noise, and a rerun or a resume draws the same ones again."""
        g = step_generator(self.cfg.train.seed, step, rank, raw.device)
        ctx = StepContext(generator=g, step=step, epoch=self.current_epoch,
                          progress=step / self.total_steps, total_steps=self.total_steps)
        images = augment(raw, self.cfg.data, self._mean, self._std, g)
        return self.method({"image": images, "raw": raw, "label": labels}, ctx)

    def _ema_progress(self, step: int) -> float:
        """The schedule position of the EMA update that follows optimizer step `step` (logged and applied)."""
        return min((step + 1) / self.total_steps, 1.0)

    def _is_log_step(self, step: int) -> bool:
        # Lightning writes the logs of step s when (s + 1) % log_every_n_steps == 0, or when stopping
        return (step + 1) % max(self.cfg.train.log_every_n_steps, 1) == 0 or self.trainer.should_stop

    def _all_reduce(self, t: Tensor, op: str) -> Tensor:
        """In-place all-reduce over ranks ("sum", "mean" or "max"); no barrier, so on NCCL it is queued on
        the stream without a host sync (Lightning's `strategy.reduce` adds a barrier)."""
        import torch.distributed as dist

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
        vals = self._all_reduce(vals, "mean").cpu()
        logs = {f"train/{k}": v for k, v in zip(keys, vals)}
        logs["train/lr"] = torch.tensor(lr)
        if hasattr(self.method, "ema_momentum") and self.method.ema_pairs():
            logs["train/ema_momentum"] = torch.tensor(self.method.ema_momentum(self._ema_progress(step)))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("loss", logs["train/loss"], prog_bar=True, logger=False, batch_size=batch_size)
        self.last_logs = {k: float(v) for k, v in logs.items()}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard. Runs after backward (and DDP's gradient all-reduce), before clipping and
        the update. A bad step sets every gradient to None, which makes AdamW's step a no-op (no moment,
        step-count or weight-decay update); the EMA update and buffer changes are undone as well. The
        decision is OR-reduced over ranks so all of them skip together.

        With fused AdamW (CUDA) the decision never leaves the device: see `_guard_on_device`."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # With fp16 loss scaling the scaler already skips overflowed steps (and they are routine).
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if optimizer.defaults.get("fused") and scaler is None:
            self._guard_on_device(optimizer, grads)
            return
        loss_ok = bool(torch.isfinite(self._step_out["loss"]).all())
        grad_ok = True
        if grads and scaler is None:
            grad_ok = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
        bad = self.trainer.strategy.reduce_boolean_decision(not (loss_ok and grad_ok), all=False)
        self._step_bad = bad
        if not bad:
            self.consecutive_skips = 0
            return
        what = self._bad_terms(loss_ok, grad_ok)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        with torch.no_grad():
            for b, old in zip(self.method.buffers(), self._buffers_before):
                b.copy_(old)
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self.log("train/skipped_steps", torch.tensor(float(self.skipped_steps)), on_step=True, on_epoch=False)
        log.warning("step %d skipped: non-finite %s (%d in a row, %d in all)", self.global_step, what,
                    self.consecutive_skips, self.skipped_steps)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite {what} at step {self.global_step}, {self.consecutive_skips} steps in a row "
                f"(train.max_bad_steps={self.max_consecutive_skips}); stopped, the last good checkpoint is kept "
                f"— lower the lr (optim.blr), set optim.grad_clip, or check the data")

    @torch.no_grad()
    def _guard_on_device(self, optimizer: torch.optim.Optimizer, grads: list[Tensor]) -> None:
        """The guard without a host sync per step. The bad flag (max-reduced over ranks) goes to fused AdamW
        as `found_inf`, which skips the update and un-counts the step exactly as under a GradScaler; buffers
        are restored and the EMA momentum set to 1 by tensor arithmetic. The counters stay on the device and
        are read on log steps (`_check_guard`), so a run of `train.max_bad_steps` bad steps stops the run at
        the next log step (no update happens in between)."""
        dev = self._step_out["loss"].device
        loss_bad = ~torch.isfinite(self._step_out["loss"]).all()
        grad_bad = (~torch.stack(torch._foreach_norm(grads)).isfinite().all() if grads
                    else torch.zeros((), dtype=torch.bool, device=dev))
        flags = self._all_reduce(torch.stack([loss_bad, grad_bad]).float(), "max")
        bad = flags.amax()
        optimizer.found_inf = bad
        self._bad = bad
        for b, old in zip(self.method.buffers(), self._buffers_before):
            b.copy_(torch.where(bad > 0, old, b))
        if not self._guard:
            zero = torch.zeros((), dtype=torch.long, device=dev)
            self._guard = {"skipped": zero + self.skipped_steps, "run": zero.clone(), "trip_step": zero - 1,
                           "trip_what": zero.clone()}
        g, b = self._guard, bad.long()
        g["skipped"] += b
        g["run"] = (g["run"] + b) * b
        newly = (g["run"] >= self.max_consecutive_skips) & (g["trip_step"] < 0)
        g["trip_step"] = torch.where(newly, self.global_step, g["trip_step"])
        what = 2 - (flags[0] > 0).long()  # 1: the loss (its gradient is then bad too), 2: only the gradient
        g["trip_what"] = torch.where(newly, what, g["trip_what"])

    def _check_guard(self, stop: bool = True, log_count: bool = False) -> None:
        """Host side of the device guard: the skip count, a warning for new skips, the stop after too many
        bad steps in a row. Runs on log steps (`log_count`: from a hook that may log), checkpoints and at
        the end."""
        if not self._guard:
            return
        skipped, run, trip_step, trip_what = (int(v) for v in torch.stack(list(self._guard.values())).tolist())
        if skipped > self.skipped_steps:
            log.warning("%d step(s) skipped up to step %d: non-finite loss or gradient (%d in all)",
                        skipped - self.skipped_steps, self.global_step - 1, skipped)
        if log_count and skipped > self._skips_logged:
            self.log("train/skipped_steps", torch.tensor(float(skipped)), on_step=True, on_epoch=False)
            self._skips_logged = skipped
        self.skipped_steps, self.consecutive_skips = skipped, run
        if stop and trip_step >= 0:
            what = {1: "loss", 2: "gradient"}.get(trip_what, "loss or gradient")
            raise NonFiniteLossError(
                f"non-finite {what} at step {trip_step}, {self.max_consecutive_skips} steps in a row "
                f"(train.max_bad_steps={self.max_consecutive_skips}); stopped, the last good checkpoint is kept "
                f"— lower the lr (optim.blr), set optim.grad_clip, or check the data")

    def _bad_terms(self, loss_ok: bool, grad_ok: bool) -> str:
        """'loss (loss, recon)' naming the non-finite logged terms, or 'gradient (of <param>)'."""
        if not loss_ok:
            bad = [k for k, v in self._step_out.items() if not torch.isfinite(v).all()]
            return f"loss ({', '.join(bad)})"
        if not grad_ok:
            names = [n for n, p in self.method.named_parameters() if p.grad is not None
                     and not torch.isfinite(p.grad).all()]
            return f"gradient (of {names[0]})" if names else "gradient"
        return "loss or gradient on another rank"

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """The update, then the EMA targets. The EMA runs here rather than in `on_train_batch_end` because
        callbacks' batch-end hooks (the step-interval checkpoint) run before the module's: a checkpoint
        must hold the targets after this step's update."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        pairs = self.method.ema_pairs() if hasattr(self.method, "ema_pairs") else []
        if pairs and not self._step_bad:
            # global_step counts this step only once the hook returns; the momentum is for step + 1
            m = self.method.ema_momentum(self._ema_progress(self.global_step))
            # device guard: a bad step's momentum is 1 (targets kept), decided without leaving the device
            ema_update(pairs, m if self._bad is None else m + (1 - m) * self._bad)
        self._step_bad, self._bad = False, None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % max(self.cfg.train.log_every_n_steps, 1) == 0:
            self._check_guard(log_count=True)
        self._throughput()

    def on_train_end(self) -> None:
        self._check_guard()

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
        loader = getattr(self, "loader", None)
        if hasattr(loader, "stage"):  # now the process knows its device: dataset to the GPU, or pinned batches
            loader.stage(self.device)

    def on_train_start(self) -> None:
        self._fit_t0 = time.perf_counter()

    def train_time_s(self) -> float:
        """Training wall time of the whole run so far, over all resumed segments."""
        now = time.perf_counter()
        return self.train_time_before + (now - self._fit_t0 if self._fit_t0 is not None else 0.0)

    def on_train_epoch_start(self) -> None:
        loader = getattr(self, "loader", None)
        if loader is not None:
            loader.set_epoch(self.current_epoch)
        self._t_last, self._images_since = time.perf_counter(), 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["byon"] = run_metadata(self.cfg, self.info)
        self._check_guard(stop=False)
        checkpoint["byon"]["skipped_steps"] = self.skipped_steps
        checkpoint["byon"]["train_time_s"] = self.train_time_s()
        checkpoint["byon"]["segments"] = self.segments
        # rows logged before this checkpoint must survive a kill: a resume keeps only those
        for lg in self.trainer.loggers:
            lg.save()
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        loader = getattr(self, "loader", None)
        if loader is not None and "combined_loader" in fit_state:
            fit_state["combined_loader"] = [self.loader_position(len(loader))]

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
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        # None: written before byon kept the time; the run's total is then unknown
        before = meta.get("train_time_s")
        self.train_time_before = float(before) if before is not None else math.nan
        self.segments = int(meta.get("segments", 1)) + 1

    def steady_images_per_s(self) -> float:
        xs = self.images_per_s
        return float(sum(xs) / len(xs)) if xs else math.nan
