"""Lightning pieces of crash-safe checkpointing: an atomic CheckpointIO and a step-interval ModelCheckpoint."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from byon.rundir import atomic_save, torch_load


def _keep_device(storage: Any, loc: Any) -> Any:  # Lightning's default map_location: tensors stay where saved
    return storage


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with `atomic_save` (temp file + fsync + rename) for every write."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = _keep_device, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Lightning's own read on resume (`trainer.fit(ckpt_path=...)`) under byon's rule: weights only unless
        `--trust-checkpoint` (Lightning's `weights_only` argument is not trusted to say otherwise)."""
        return torch_load(path, map_location)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint's epoch-end saving plus, when `every_steps` is set, a save every that many optimizer
    steps (Lightning makes step and epoch triggers mutually exclusive; a mid-epoch kill should lose at most
    `every_steps` steps). Both go through the same top-k rotation and `last.ckpt`."""

    def __init__(self, *args: Any, every_steps: int | None = None, **kwargs: Any) -> None:
        # Always overwrite `last.ckpt`: with Lightning's version counter a resume whose callback state did not
        # load (e.g. a checkpoint from an older byon) writes `last-v1.ckpt` and leaves a stale `last.ckpt`.
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)
        self.every_steps = every_steps

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.received_sigterm and self._last_global_step_saved != trainer.global_step:
            # a stop signal (SIGTERM, or SIGINT through `engine.run.stop_signals`): the step that was running has
            # finished; save it now, before Lightning ends the fit at this step boundary
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        if not self.every_steps or trainer.global_step % self.every_steps:
            return
        if self._should_skip_saving_checkpoint(trainer):  # e.g. already saved at this step
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def last_step_saved(self) -> int:
        """Global step of this run's latest save (0 before the first)."""
        return self._last_global_step_saved


__all__ = ["AtomicCheckpointIO", "RunCheckpoint"]
