"""Projection / prediction heads (BYOL's MLP; used by BYOL and BYON. I-JEPA has no heads: its predictor is
nn/predictor.py)."""

from __future__ import annotations

from torch import Tensor, nn

from byon.errors import unknown

HEAD_NORMS = ("bn", "ln", "none")


class MLPHead(nn.Module):
    """Linear(in→hidden) → norm → ReLU → Linear(hidden→out). x: (B, in_dim) → (B, out_dim).

    norm: "bn" (BYOL; BatchNorm1d uses batch statistics in training, so B ≥ 2), "ln" or "none".
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str = "bn") -> None:
        super().__init__()
        if norm not in HEAD_NORMS:
            raise unknown("head norm", norm, HEAD_NORMS)
        norm_layer = {"bn": nn.BatchNorm1d, "ln": nn.LayerNorm, "none": lambda _: nn.Identity()}[norm]
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), norm_layer(hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


__all__ = ["HEAD_NORMS", "MLPHead"]
