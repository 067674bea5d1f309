"""Corruptions: masks, patch targets, diffusion schedules, saliency-adaptive noise."""
