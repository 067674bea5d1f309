"""The training loader: the in-memory batch loader, staged on the training device once the process knows it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from byon.data.loader import BatchLoader


class RunLoader(BatchLoader):
    """The training loader. `stage(device)` runs once the process knows its device: on CUDA a dataset that
    fits (≤ `max_fraction` of the GPU's memory) is copied to the GPU once, so batches are sliced and
    augmented there with no per-step transfer; a larger one hands each batch over in pinned memory, so
    Lightning's `non_blocking` copy is asynchronous. On CPU nothing changes."""

    max_fraction = 0.2
    pin = False

    def stage(self, device: torch.device) -> str:
        """→ "cpu", "device" (dataset on the GPU) or "pinned"."""
        images = self.data.images
        if device.type != "cuda":
            return "cpu"
        if images.device != device:
            _, total = torch.cuda.mem_get_info(device)
            if images.numel() * images.element_size() > self.max_fraction * total:
                self.pin = True
                return "pinned"
            self.data = dataclasses.replace(self.data, images=images.to(device))
            self.labels = self.labels.to(device)
        return "device"

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.pin:
            yield from super().__iter__()
            return
        for images, labels in super().__iter__():
            yield images.pin_memory(), labels.pin_memory()


__all__ = ["RunLoader"]
