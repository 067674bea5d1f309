"""Patch-wise PCA tokenizer (l-DAE §4.2, Chen et al. 2024): z = V·(x − μ) per flattened patch x (p·p·C),
x = μ + Vᵀ·z back. V holds every principal direction (P × P, rows by decreasing variance), so the first d
coordinates are the kept latent and the rest the PCA residual. Fitted once by eigendecomposition of the
covariance of training patches; no gradient ever reaches it.

The basis lives in buffers that the state dict saves, so checkpoints, resume and `load_run` carry it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from byon.corruption.patches import patchify
from byon.errors import ByonError


def default_latent_dim(patch_dim: int) -> int:
    """2^round(log2 √P): 32 for 16×16×3 patches (Tab. 2's best PCA entry of 16–32), 4 for 4×4×1."""
    return min(patch_dim, 2 ** round(math.log2(math.sqrt(patch_dim))))


class PatchPCA(nn.Module):
    """Buffers: mean (P,) μ; components (P, P) V, rows orthonormal; variance (P,) the eigenvalues, decreasing;
    fitted () bool. `identity(P)` is the pixel tokenizer (V = I, μ = 0), fitted from the start."""

    def __init__(self, patch_dim: int, identity: bool = False) -> None:
        super().__init__()
        self.patch_dim = patch_dim
        self.register_buffer("mean", torch.zeros(patch_dim))
        self.register_buffer("components", torch.eye(patch_dim))
        self.register_buffer("variance", torch.ones(patch_dim))
        self.register_buffer("fitted", torch.tensor(identity))

    def check_fitted(self) -> None:
        if not bool(self.fitted):
            raise ByonError("the PCA tokenizer is not fitted; fit it on training patches first (the engine calls "
                            "the method's setup_data before training; tests call it themselves)")

    @torch.no_grad()
    def fit_covariance(self, mean: Tensor, cov: Tensor) -> PatchPCA:
        """Set the basis from a patch mean (P,) and covariance (P, P): eigenvectors by decreasing eigenvalue."""
        evals, evecs = torch.linalg.eigh(cov.double())  # ascending
        order = evals.argsort(descending=True)
        V = evecs[:, order].T  # rows = directions
        # eigenvectors are defined up to sign; fix it so refits on the same data agree everywhere
        sign = torch.sign(V.gather(1, V.abs().argmax(dim=1, keepdim=True)))
        self.mean.copy_(mean.to(self.mean))
        self.components.copy_((V * sign).to(self.components))
        self.variance.copy_(evals[order].clamp_min(0).to(self.variance))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def fit(self, patches: Tensor) -> PatchPCA:
        """patches: (M, P) → fitted on their covariance (float64)."""
        x = patches.reshape(-1, self.patch_dim).double()
        mean = x.mean(dim=0)
        xc = x - mean
        return self.fit_covariance(mean, xc.T @ xc / max(len(x) - 1, 1))

    @torch.no_grad()
    def fit_images(self, images: Tensor, mean: Sequence[float], std: Sequence[float], patch_size: int,
                   max_images: int | None = None, seed: int = 0, chunk: int = 1024) -> PatchPCA:
        """Fit on every patch of uint8 images (N, C, H, W), normalised with the per-channel mean/std as the
        training batches are; at most `max_images` images (a seeded random subset). Streams float64 sums."""
        if max_images is not None and len(images) > max_images:
            idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_images]
            images = images[idx.sort().values]
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        P = self.patch_dim
        total, s1, s2 = 0, torch.zeros(P, dtype=torch.float64), torch.zeros(P, P, dtype=torch.float64)
        for i in range(0, len(images), chunk):
            x = patchify((images[i:i + chunk].float() / 255 - m) / s, patch_size).reshape(-1, P)
            if x.shape[1] != P:
                raise ByonError(f"patches of {x.shape[1]} values do not match the tokenizer's {P}")
            total += len(x)
            s1 += x.double().sum(dim=0)
            s2 += (x.T @ x).double()  # float32 per chunk, accumulated in float64
        if total < 2:
            raise ByonError("fitting the PCA tokenizer needs at least two patches")
        mu = s1 / total
        cov = (s2 - total * torch.outer(mu, mu)) / (total - 1)
        return self.fit_covariance(mu, cov)

    def encode(self, x: Tensor) -> Tensor:
        """Patches (…, P) → all P latent coordinates z = V(x − μ) (…, P)."""
        self.check_fitted()
        with torch.autocast(x.device.type, enabled=False):  # a fixed fp32 transform, also under bf16 autocast
            return (x.float() - self.mean) @ self.components.T

    def decode(self, z: Tensor) -> Tensor:
        """Latents (…, d), d ≤ P, the leading coordinates → patches μ + V[:d]ᵀz (…, P) (inverse PCA; the
        coordinates beyond d count as zero)."""
        self.check_fitted()
        with torch.autocast(z.device.type, enabled=False):
            return z.float() @ self.components[: z.shape[-1]] + self.mean

    def project(self, x: Tensor, d: int) -> Tensor:
        """Patches (…, P) → their inverse-PCA reconstruction from the leading d components (…, P)."""
        return self.decode(self.encode(x)[..., :d])

    def explained(self) -> Tensor:
        """Cumulative fraction of the patch variance kept by the leading d = 1 … P components, (P,)."""
        return self.variance.cumsum(0) / self.variance.sum().clamp_min(1e-12)


__all__ = ["PatchPCA", "default_latent_dim"]
