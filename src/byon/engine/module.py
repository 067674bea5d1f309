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
from byon.data.transforms import augment
from byon.engine.context import DataInfo, StepContext, step_generator
from byon.engine.ema import ema_update
from byon.engine.optim import cosine_schedule, param_groups, warmup_cosine
from byon.errors import ByonError

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
        self._step_out: dict[str, Tensor] = {}
        self._buffers_before: list[Tensor] = []
        self._t_last: float | None = None
        self._images_since = 0
        self.images_per_s: list[float] = []
        self.last_logs: dict[str, float] = {}

    # --- schedules -------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return max(len(self.loader), 1)

    @property
    def total_steps(self) -> int:
        """Schedules span the configured epochs; `train.max_steps` only stops early (so a stopped run
        resumes onto the same schedule)."""
        return max(self.cfg.train.epochs * self.steps_per_epoch, 1)

    def base_lr(self) -> float:
        o = self.cfg.optim
        if o.lr is not None:
            return o.lr
        global_batch = self.cfg.train.batch_size * self.trainer.world_size
        return o.blr * global_batch / o.lr_scale_batch

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = param_groups(self.method, o.weight_decay)
        fused = torch.cuda.is_available() and self.cfg.train.accelerator != "cpu"
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
        g = step_generator(self.cfg.train.seed, step, self.global_rank, raw.device)
        ctx = StepContext(generator=g, step=step, epoch=self.current_epoch,
                          progress=step / self.total_steps, total_steps=self.total_steps)
        images = augment(raw, self.cfg.data, self._mean, self._std, g)
        # A skipped step must leave no trace, buffers included (BN statistics, histograms).
        self._buffers_before = [b.detach().clone() for b in self.method.buffers()]
        out = self.method({"image": images, "raw": raw, "label": labels}, ctx)
        loss = out["loss"]
        self._step_out = {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}

        log_now = step % max(self.cfg.train.log_every_n_steps, 1) == 0
        logs = {f"train/{k}": v.detach().float() for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        logs["train/lr"] = torch.tensor(lr)
        if hasattr(self.method, "ema_momentum") and self.method.ema_pairs():
            logs["train/ema_momentum"] = torch.tensor(self.method.ema_momentum(ctx.progress))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=raw.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=raw.shape[0])
        if log_now:
            self.last_logs = {k: float(v) for k, v in logs.items()}
        self._images_since += raw.shape[0] * self.trainer.world_size
        # Always hand the loss back, finite or not: under DDP every rank must run backward (its gradient
        # all-reduce), so the skip decision is taken after it, in `on_before_optimizer_step`.
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard. Runs after backward (and DDP's gradient all-reduce), before clipping and
        the update. A bad step sets every gradient to None, which makes AdamW's step a no-op (no moment,
        step-count or weight-decay update); the EMA update and buffer changes are undone as well. The
        decision is OR-reduced over ranks so all of them skip together."""
        loss_ok = bool(torch.isfinite(self._step_out["loss"]).all())
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # With fp16 loss scaling the scaler already skips overflowed steps (and they are routine).
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
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
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        log.warning("step %d skipped: non-finite %s (%d in a row, %d in all)", self.global_step, what,
                    self.consecutive_skips, self.skipped_steps)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite {what} at step {self.global_step}, {self.consecutive_skips} steps in a row "
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
            ema_update(pairs, self.method.ema_momentum(min((self.global_step + 1) / self.total_steps, 1.0)))
        self._step_bad = False

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._throughput()

    def _throughput(self) -> None:
        every = max(self.cfg.train.log_every_n_steps, 1)
        if self.global_step % every:
            return
        now = time.perf_counter()
        if self._t_last is not None and self._images_since:
            ips = self._images_since / (now - self._t_last)
            if self.global_step > every:  # skip the warm-up window
                self.images_per_s.append(ips)
            self.log("img/s", ips, prog_bar=True, logger=False, rank_zero_only=True)
            self.log("train/images_per_s", ips, on_step=True, rank_zero_only=True)
        self._t_last, self._images_since = now, 0

    def on_train_epoch_start(self) -> None:
        loader = getattr(self, "loader", None)
        if loader is not None:
            loader.set_epoch(self.current_epoch)
        self._t_last, self._images_since = time.perf_counter(), 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from byon.engine.run import run_metadata

        checkpoint["byon"] = run_metadata(self.cfg, self.info)
        checkpoint["byon"]["skipped_steps"] = self.skipped_steps
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
        self.skipped_steps = int(checkpoint.get("byon", {}).get("skipped_steps", 0))

    def steady_images_per_s(self) -> float:
        xs = self.images_per_s
        return float(sum(xs) / len(xs)) if xs else math.nan
