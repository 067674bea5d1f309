"""Datasets held in memory as uint8 tensors, batched tensor augmentation, and a batch loader."""

from __future__ import annotations

from collections.abc import Sequence

from byon.data.datasets import DATASETS, SPLITS, load_dataset
from byon.data.imagedata import DataInfo, ImageData, channel_stats
from byon.data.loader import BatchLoader


def data_info(data: ImageData, mean: Sequence[float], std: Sequence[float]) -> DataInfo:
    """What a method needs to know about `data`, with the normalisation stats (usually the train split's)."""
    return DataInfo(name=data.name, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


__all__ = ["DATASETS", "SPLITS", "BatchLoader", "DataInfo", "ImageData", "channel_stats", "data_info",
           "load_dataset"]
