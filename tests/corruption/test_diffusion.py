import math

import pytest
import torch

from byon.corruption.diffusion import DDPMSchedule, edm_precondition, edm_sigma, edm_weight
from byon.errors import ByonError


def test_linear_betas_and_alphas_cumprod_by_hand():
    s = DDPMSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)
    torch.testing.assert_close(s.betas, torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(s.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504]))
    torch.testing.assert_close(s.sqrt_ab ** 2 + s.sqrt_1mab ** 2, torch.ones(3))


def test_beta_scale_lowers_only_the_end_of_the_linear_schedule():
    s = DDPMSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3, beta_scale=0.5)
    torch.testing.assert_close(s.betas, torch.tensor([0.1, 0.125, 0.15]))
    torch.testing.assert_close(s.alphas_cumprod, torch.tensor([0.9, 0.7875, 0.669375]))


def test_ddpm_endpoints_at_T_1000():
    full, half = DDPMSchedule(), DDPMSchedule(beta_scale=0.5)
    assert full.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert full.betas[-1].item() == pytest.approx(0.02)
    assert half.betas[-1].item() == pytest.approx(0.01)
    # ᾱ_999 = Π(1 − β_t); DDPM's linear schedule ends near 4.0e-5; halved betas keep ≈ e^{−5.05}
    exact = torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).item()
    assert full.alphas_cumprod[-1].item() == pytest.approx(exact, rel=1e-3)
    assert exact == pytest.approx(4.04e-5, rel=2e-2)
    assert half.alphas_cumprod[-1].item() == pytest.approx(math.exp(-5.05), rel=5e-2)
    assert (full.alphas_cumprod.diff() < 0).all()


def test_cosine_schedule_is_monotone_and_clipped():
    s = DDPMSchedule(num_timesteps=100, kind="cosine")
    assert (s.alphas_cumprod.diff() < 0).all()
    assert s.betas.max().item() <= 0.999 + 1e-6
    assert s.alphas_cumprod[0].item() > 0.99


def test_unknown_schedule_is_a_user_error():
    with pytest.raises(ByonError, match="cosine"):
        DDPMSchedule(kind="cosin")


def test_q_sample_broadcasts_per_image_with_eta():
    s = DDPMSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)
    x0, eps = torch.ones(2, 3, 4), torch.ones(2, 3, 4)
    t, eta = torch.tensor([0, 2]), torch.tensor([1.0, 2.0])
    x_t = s.q_sample(x0, t, eps, eta)
    assert x_t.shape == (2, 3, 4)
    torch.testing.assert_close(x_t[0], torch.full((3, 4), math.sqrt(0.9) + math.sqrt(0.1)))
    torch.testing.assert_close(x_t[1], torch.full((3, 4), math.sqrt(0.504) + 2 * math.sqrt(0.496)))
    torch.testing.assert_close(s.q_sample(x0, t, eps), s.q_sample(x0, t, eps, torch.ones(2)))


def test_predict_x0_inverts_q_sample():
    s = DDPMSchedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 5, 6, generator=g), torch.randn(4, 5, 6, generator=g)
    t, eta = torch.tensor([0, 10, 500, 999]), torch.tensor([0.9, 1.0, 1.1, 1.2])
    x0_hat = s.predict_x0(s.q_sample(x0, t, eps, eta), t, eps, eta)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=1e-4)


def test_sample_t_uses_the_generator_and_stays_in_range():
    s = DDPMSchedule(num_timesteps=10)
    a = s.sample_t(500, torch.Generator().manual_seed(3))
    b = s.sample_t(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() <= 9 and len(a.unique()) == 10


def test_edm_precondition_at_known_sigmas():
    c_skip, c_out, c_in, c_noise = edm_precondition(torch.tensor([0.5, 1.0]), sigma_data=0.5)
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(c_out, torch.tensor([0.25 / math.sqrt(0.5), 0.5 / math.sqrt(1.25)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(1.25)]))
    torch.testing.assert_close(c_noise, torch.tensor([math.log(0.5) / 4, 0.0]))
    torch.testing.assert_close(edm_weight(torch.tensor([0.5, 1.0]), 0.5), torch.tensor([8.0, 5.0]))


def test_edm_weight_is_one_over_c_out_squared():
    sigma = torch.tensor([0.01, 0.3, 2.0, 40.0], dtype=torch.float64)
    _, c_out, _, _ = edm_precondition(sigma, 0.5)
    torch.testing.assert_close(edm_weight(sigma, 0.5), 1 / c_out**2)


def test_edm_sigma_is_lognormal_and_seeded():
    a = edm_sigma(20000, torch.Generator().manual_seed(0))
    assert torch.equal(a, edm_sigma(20000, torch.Generator().manual_seed(0)))
    assert a.log().mean().item() == pytest.approx(-1.2, abs=0.05)
    assert a.log().std().item() == pytest.approx(1.2, abs=0.05)
