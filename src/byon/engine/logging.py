"""A CSV logger that keeps the earlier rows of a resumed run (Lightning's deletes them)."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    resume_step: int | None = None

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            # rows logged after the checkpoint we resume from would be logged again: drop them
            rows = [r for r in reader
                    if self.resume_step is None or not r.get("step") or int(float(r["step"])) < self.resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """`metrics.csv` continues across `--resume` instead of starting over."""

    def __init__(self, *args, resume_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer_cls = type("_Writer", (_AppendingWriter,), {"resume_step": self._resume_step})
            self._experiment = writer_cls(log_dir=self.log_dir)
        return self._experiment
