import pytest
import torch

from byon.corruption.diffusion import DDPMSchedule
from byon.corruption.samplers import ddim_sample, ddim_timesteps, edm_sigma_steps, heun_sample
from byon.errors import ByonError


def test_edm_sigma_steps_by_hand():
    s = edm_sigma_steps(18)
    assert s.shape == (19,)
    assert s[0].item() == pytest.approx(80.0) and s[17].item() == pytest.approx(0.002) and s[18].item() == 0
    assert bool((s[:-1] > s[1:]).all())
    # EDM eq. 5 at i = 1 of n = 3, ρ = 7: (80^(1/7) + ½(0.002^(1/7) − 80^(1/7)))^7
    mid = (80 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert edm_sigma_steps(3)[1].item() == pytest.approx(mid)
    with pytest.raises(ByonError):
        edm_sigma_steps(0)


def test_ddim_timesteps_span_the_schedule():
    ts = ddim_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts.unique()) == 50 and bool((ts[:-1] > ts[1:]).all())
    with pytest.raises(ByonError):
        ddim_timesteps(10, 11)


def test_ddim_with_the_true_eps_of_a_point_mass_returns_it():
    """Data = one point c: the exact ε̂(x_t, t) = (x_t − √ᾱ_t·c)/√(1 − ᾱ_t); DDIM must land on c."""
    sched = DDPMSchedule()
    c = torch.tensor([0.3, -0.2]).view(1, 2)
    eps_fn = lambda x, t: (x - sched.sqrt_ab[t][:, None] * c) / sched.sqrt_1mab[t][:, None]  # noqa: E731
    out = ddim_sample(eps_fn, sched, (4, 2), 20, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, c.expand(4, 2), atol=1e-4, rtol=0)
    clipped = ddim_sample(eps_fn, sched, (4, 2), 20, torch.Generator().manual_seed(0), clip=(-0.1, 0.1))
    assert clipped.abs().max() <= 0.1 + 1e-6


def test_heun_with_the_true_denoiser_of_a_point_mass_returns_it():
    c = torch.tensor([0.5, -1.0]).view(1, 2)
    out = heun_sample(lambda x, s: c.expand_as(x), (3, 2), 10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, c.expand(3, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "heun", "euler"])
def test_samplers_shapes_and_determinism(sampler):
    sched = DDPMSchedule()
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 0.1

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        if sampler == "ddim":
            return ddim_sample(lambda x, t: x @ w, sched, (5, 4), 7, g, eta=0.5)
        return heun_sample(lambda x, s: x @ w, (5, 4), 7, g, second_order=sampler == "heun")

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (5, 4) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
