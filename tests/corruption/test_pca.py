import math

import pytest
import torch

from byon.corruption.patches import patchify
from byon.corruption.pca import PatchPCA, default_latent_dim
from byon.errors import ByonError


def correlated_patches(n: int = 4000, P: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(P, P, generator=g) * torch.logspace(0, -2, P)  # decaying spectrum
    return torch.randn(n, P, generator=g) @ A.T + torch.randn(P, generator=g)


def test_basis_is_orthonormal_and_sorted():
    pca = PatchPCA(16).fit(correlated_patches())
    V = pca.components.double()
    torch.testing.assert_close(V @ V.T, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    assert bool((pca.variance[:-1] >= pca.variance[1:]).all())
    # the eigenvalues are the variances of the latent coordinates
    z = pca.encode(correlated_patches())
    torch.testing.assert_close(z.var(dim=0), pca.variance, rtol=2e-3, atol=1e-5)


def test_reconstruction_error_falls_with_d_and_vanishes_at_full_rank():
    x = correlated_patches()
    pca = PatchPCA(16).fit(x)
    errors = [(pca.project(x, d) - x).pow(2).sum(-1).mean().item() for d in range(1, 17)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-8
    # the error at d is the variance left in the discarded components
    assert errors[3] == pytest.approx(pca.variance[4:].sum().item(), rel=1e-2)


def test_latent_noise_after_inverse_pca_has_covariance_sigma2_VdT_Vd():
    """x_t − x̃ = V_dᵀ·σ·ε: Cov = σ²·V_dᵀV_d, a rank-d projection scaled by σ²."""
    pca = PatchPCA(16).fit(correlated_patches())
    d, sigma = 4, 0.7
    eps = torch.randn(200_000, d, generator=torch.Generator().manual_seed(1))
    noise = pca.decode(sigma * eps) - pca.mean  # the noise part of μ + V_dᵀ(z + σε)
    cov = noise.T @ noise / len(noise)
    Vd = pca.components[:d]
    torch.testing.assert_close(cov, sigma**2 * Vd.T @ Vd, atol=1e-2, rtol=0)
    assert torch.linalg.matrix_rank(cov, atol=1e-3).item() == d


def test_fit_images_matches_fit_on_the_same_normalised_patches():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    a = PatchPCA(48).fit_images(images, mean, std, patch_size=4, chunk=7)
    norm = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    b = PatchPCA(48).fit(patchify(norm, 4).reshape(-1, 48))
    torch.testing.assert_close(a.mean, b.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.variance, b.variance, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.components[:10], b.components[:10], atol=1e-3, rtol=0)  # signs fixed
    sub = PatchPCA(48).fit_images(images, mean, std, patch_size=4, max_images=10)
    assert not torch.allclose(sub.variance, a.variance)


def test_identity_tokenizer_and_unfitted_error():
    ident = PatchPCA(16, identity=True)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ident.encode(x), x)
    torch.testing.assert_close(ident.project(x, 16), x)
    with pytest.raises(ByonError, match="not fitted"):
        PatchPCA(16).encode(x)


def test_default_latent_dims():
    assert default_latent_dim(16 * 16 * 3) == 32
    assert default_latent_dim(4 * 4 * 1) == 4
    assert default_latent_dim(4 * 4 * 3) == 8
    assert default_latent_dim(1) == 1 and default_latent_dim(2) == min(2, 2 ** round(math.log2(math.sqrt(2))))
