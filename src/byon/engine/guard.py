"""The non-finite guard: a step whose loss or gradient is not finite leaves no trace (no update, no EMA step,
buffers restored) on every rank, and `train.max_bad_steps` such steps in a row stop the run."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from byon.errors import ByonError

log = logging.getLogger(__name__)


class NonFiniteLossError(ByonError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def _stopped(lm: L.LightningModule) -> str:
    """The end of the stop message: what is kept (a checkpoint only if one was saved) and what to change."""
    cb = lm.trainer.checkpoint_callback
    folder = Path(cb.dirpath) if cb is not None and getattr(cb, "dirpath", None) else None
    kept = ("stopped, the last good checkpoint is kept" if folder is not None and any(folder.glob("*.ckpt"))
            else "stopped before the first checkpoint, so there is nothing to resume")
    return f"{kept} — lower the lr (optim.blr), set optim.grad_clip, or check the data"


class NonFiniteGuard:
    """State of the guard over a run: `skipped_steps` in all, `consecutive_skips` in a row. `snapshot` before
    each step, `check` after backward, `ema_momentum` / `end_step` around the EMA update, `read` on log steps,
    checkpoints and the end (the device guard's counters)."""

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.step_bad = False
        # the device-side guard (fused AdamW): this step's bad flag and the counters, read at log steps
        self.bad: Tensor | None = None
        self._guard: dict[str, Tensor] = {}
        self._skips_logged = 0
        self.buffers_before: list[Tensor] = []

    def snapshot(self, method: torch.nn.Module) -> None:
        """A skipped step must leave no trace, buffers included (BN statistics, histograms)."""
        self.buffers_before = [b.detach().clone() for b in method.buffers()]

    def ema_momentum(self, m: float) -> float | Tensor | None:
        """The momentum of this step's EMA update: None to skip it (a bad step, host guard); under the device
        guard a bad step's momentum is 1 (targets kept), decided without leaving the device."""
        if self.step_bad:
            return None
        return m if self.bad is None else m + (1 - m) * self.bad

    def end_step(self) -> None:
        self.step_bad, self.bad = False, None

    def check(self, lm: L.LightningModule, optimizer: torch.optim.Optimizer, step_out: dict[str, Tensor]) -> None:
        """The non-finite guard. Runs after backward (and DDP's gradient all-reduce), before clipping and
        the update. A bad step sets every gradient to None, which makes AdamW's step a no-op (no moment,
        step-count or weight-decay update); the EMA update and buffer changes are undone as well. The
        decision is OR-reduced over ranks so all of them skip together.

        With fused AdamW (CUDA) the decision never leaves the device: see `_on_device`."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # With fp16 loss scaling the scaler already skips overflowed steps (and they are routine).
        scaler = getattr(lm.trainer.precision_plugin, "scaler", None)
        if optimizer.defaults.get("fused") and scaler is None:
            self._on_device(lm, optimizer, grads, step_out)
            return
        loss_ok = bool(torch.isfinite(step_out["loss"]).all())
        grad_ok = True
        if grads and scaler is None:
            grad_ok = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
        bad = lm.trainer.strategy.reduce_boolean_decision(not (loss_ok and grad_ok), all=False)
        self.step_bad = bad
        if not bad:
            self.consecutive_skips = 0
            return
        what = self._bad_terms(lm, step_out, loss_ok, grad_ok)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        with torch.no_grad():
            for b, old in zip(lm.method.buffers(), self.buffers_before):
                b.copy_(old)
        self.skipped_steps += 1
        self.consecutive_skips += 1
        lm.log("train/skipped_steps", torch.tensor(float(self.skipped_steps)), on_step=True, on_epoch=False)
        log.warning("step %d skipped: non-finite %s (%d in a row, %d in all)", lm.global_step, what,
                    self.consecutive_skips, self.skipped_steps)
        if self.consecutive_skips >= self.max_bad_steps:
            raise NonFiniteLossError(f"non-finite {what} at step {lm.global_step}, {self.consecutive_skips} steps in "
                                     f"a row (train.max_bad_steps={self.max_bad_steps}); {_stopped(lm)}")

    @torch.no_grad()
    def _on_device(self, lm: L.LightningModule, optimizer: torch.optim.Optimizer, grads: list[Tensor],
                   step_out: dict[str, Tensor]) -> None:
        """The guard without a host sync per step. The bad flag (max-reduced over ranks) goes to fused AdamW
        as `found_inf`, which skips the update and un-counts the step exactly as under a GradScaler; buffers
        are restored and the EMA momentum set to 1 by tensor arithmetic. The counters stay on the device and
        are read on log steps (`read`), so a run of `train.max_bad_steps` bad steps stops the run at
        the next log step (no update happens in between)."""
        dev = step_out["loss"].device
        loss_bad = ~torch.isfinite(step_out["loss"]).all()
        grad_bad = (~torch.stack(torch._foreach_norm(grads)).isfinite().all() if grads
                    else torch.zeros((), dtype=torch.bool, device=dev))
        flags = lm.all_reduce(torch.stack([loss_bad, grad_bad]).float(), "max")
        bad = flags.amax()
        optimizer.found_inf = bad
        self.bad = bad
        for b, old in zip(lm.method.buffers(), self.buffers_before):
            b.copy_(torch.where(bad > 0, old, b))
        if not self._guard:
            zero = torch.zeros((), dtype=torch.long, device=dev)
            self._guard = {"skipped": zero + self.skipped_steps, "run": zero.clone(), "trip_step": zero - 1,
                           "trip_what": zero.clone()}
        g, b = self._guard, bad.long()
        g["skipped"] += b
        g["run"] = (g["run"] + b) * b
        newly = (g["run"] >= self.max_bad_steps) & (g["trip_step"] < 0)
        g["trip_step"] = torch.where(newly, lm.global_step, g["trip_step"])
        what = 2 - (flags[0] > 0).long()  # 1: the loss (its gradient is then bad too), 2: only the gradient
        g["trip_what"] = torch.where(newly, what, g["trip_what"])

    def read(self, lm: L.LightningModule, stop: bool = True, log_count: bool = False) -> None:
        """Host side of the device guard: the skip count, a warning for new skips, the stop after too many
        bad steps in a row. Runs on log steps (`log_count`: from a hook that may log), checkpoints and at
        the end."""
        if not self._guard:
            return
        skipped, run, trip_step, trip_what = (int(v) for v in torch.stack(list(self._guard.values())).tolist())
        if skipped > self.skipped_steps:
            log.warning("%d step(s) skipped up to step %d: non-finite loss or gradient (%d in all)",
                        skipped - self.skipped_steps, lm.global_step - 1, skipped)
        if log_count and skipped > self._skips_logged:
            lm.log("train/skipped_steps", torch.tensor(float(skipped)), on_step=True, on_epoch=False)
            self._skips_logged = skipped
        self.skipped_steps, self.consecutive_skips = skipped, run
        if stop and trip_step >= 0:
            what = {1: "loss", 2: "gradient"}.get(trip_what, "loss or gradient")
            raise NonFiniteLossError(f"non-finite {what} at step {trip_step}, {self.max_bad_steps} steps in a row "
                                     f"(train.max_bad_steps={self.max_bad_steps}); {_stopped(lm)}")

    def _bad_terms(self, lm: L.LightningModule, step_out: dict[str, Tensor], loss_ok: bool, grad_ok: bool) -> str:
        """'loss (loss, recon)' naming the non-finite logged terms, or 'gradient (of <param>)'."""
        if not loss_ok:
            bad = [k for k, v in step_out.items() if not torch.isfinite(v).all()]
            return f"loss ({', '.join(bad)})"
        if not grad_ok:
            names = [n for n, p in lm.method.named_parameters() if p.grad is not None
                     and not torch.isfinite(p.grad).all()]
            return f"gradient (of {names[0]})" if names else "gradient"
        return "loss or gradient on another rank"


__all__ = ["NonFiniteGuard", "NonFiniteLossError"]
