"""Evaluation on frozen features: extraction (cached), weighted kNN, linear probe, pixel baselines."""

from byon.eval.baselines import pca_features, pixel_features, pixel_mean
from byon.eval.features import cached_features, extract_features
from byon.eval.knn import knn_classify
from byon.eval.linear import linear_probe

__all__ = [
    "cached_features",
    "extract_features",
    "knn_classify",
    "linear_probe",
    "pca_features",
    "pixel_features",
    "pixel_mean",
]
