"""Looking at what a trained run learned: each analysis reads a run directory and writes a PNG + a JSON
(default `<run>/analysis/<name>.{png,json}`). `byon analyze <name> --run DIR` on the command line."""

from byon.analysis.alignment import align_uniform, alignment, encoder_layer_features, uniformity
from byon.analysis.attention import attention_distance, attention_maps, mean_attention_distance
from byon.analysis.embedding import embedding_2d, pca_2d
from byon.analysis.reconstructions import reconstructions
from byon.analysis.timesteps import ian_timesteps

ANALYSES = ("attention-distance", "attention-maps", "align-uniform", "reconstructions", "embedding-2d")
# figures a method asks for at the end of its every run (`Method.run_figures`): name → fn(method, run_dir)
RUN_FIGURES = {"ian-timesteps": ian_timesteps}

__all__ = [
    "ANALYSES",
    "RUN_FIGURES",
    "align_uniform",
    "alignment",
    "attention_distance",
    "attention_maps",
    "embedding_2d",
    "ian_timesteps",
    "encoder_layer_features",
    "mean_attention_distance",
    "pca_2d",
    "reconstructions",
    "uniformity",
]
