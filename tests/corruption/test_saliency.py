import math

import pytest
import torch

from byon.corruption.saliency import ian, token_saliency
from byon.errors import ByonError


@pytest.mark.parametrize("scale", ["sqrt", "none"])
def test_saliency_has_mean_exactly_one(scale):
    X = torch.randn(3, 49, 32, generator=torch.Generator().manual_seed(0))
    S = token_saliency(X, scale)
    assert S.shape == (3, 49)
    torch.testing.assert_close(S.mean(dim=1), torch.ones(3), atol=1e-6, rtol=0)


def test_saliency_of_a_hand_built_sequence():
    # uniform affinities → every token receives exactly 1
    torch.testing.assert_close(token_saliency(torch.zeros(1, 5, 4)), torch.ones(1, 5))
    # X = [[2,0,0,0],[0,0,0,0]]: A = [[4,0],[0,0]] (/sqrt(4) = 2 for "sqrt"); row 1 is uniform
    X = torch.tensor([[[2.0, 0, 0, 0], [0, 0, 0, 0]]])
    for scale, a in (("sqrt", 2.0), ("none", 4.0)):
        p = math.exp(a) / (math.exp(a) + 1)
        torch.testing.assert_close(token_saliency(X, scale), torch.tensor([[p + 0.5, 1 - p + 0.5]]))


def test_sqrt_scale_is_the_literal_form_on_X_over_fourth_root_of_D():
    X = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(token_saliency(X, "sqrt"), token_saliency(X / 64**0.25, "none"))


def test_literal_affinity_saturates_on_distinct_wide_tokens():
    """The spec's reason for 1/sqrt(D): for distinct tokens with |x|² ≈ D the diagonal of X·Xᵀ dominates
    every row, so each token receives ≈ only its own attention (S_j ≈ 1, no signal)."""
    X = torch.randn(2, 16, 192, generator=torch.Generator().manual_seed(1))
    assert (token_saliency(X, "none") - 1).abs().max() < 1e-3
    assert (token_saliency(0.3 * X, "sqrt") - 1).abs().max() > 0.05


def test_unknown_scale_is_a_user_error():
    with pytest.raises(ByonError):
        token_saliency(torch.zeros(1, 2, 4), "sqrtt")


def test_y_counts_tokens_above_delta():
    # S = 2 is above δ = 1.25 whatever the U(0, 0.5) perturbation; S = 0 never is
    S = torch.tensor([[2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 2.0, 0.0]])
    out = ian(S, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.y, torch.tensor([0.5, 0.75]))
    assert ((out.s_tilde - S) >= 0).all() and ((out.s_tilde - S) <= 0.5).all()


def test_timestep_formula_by_hand():
    """τ = clip(λ·y + d, T_min, T_max), t = round(τ·(T−1)); d is the draw after the perturbation."""
    B, N, T = 64, 8, 1000
    g = torch.Generator().manual_seed(5)
    torch.rand(B, N, generator=g)
    d = torch.rand(B, generator=g)
    for S, y in ((torch.full((B, N), 2.0), 1.0), (torch.zeros(B, N), 0.0)):
        out = ian(S, torch.Generator().manual_seed(5), lambda_ian=0.3, t_min=0.1, t_max=0.9, num_timesteps=T)
        tau = (0.3 * y + d).clamp(0.1, 0.9)
        torch.testing.assert_close(out.tau, tau)
        torch.testing.assert_close(out.t, torch.round(tau * (T - 1)).long())


def test_timesteps_stay_in_range_and_rise_with_lambda_times_y():
    S = token_saliency(torch.randn(256, 49, 32, generator=torch.Generator().manual_seed(0)))
    ts = []
    for lam in (0.0, 0.1, 0.5, 1.0, 2.0):
        out = ian(S, torch.Generator().manual_seed(1), lambda_ian=lam, t_min=0.2, t_max=0.7)
        assert out.t.dtype == torch.long and out.t.shape == (256,)
        assert out.t.min() >= round(0.2 * 999) and out.t.max() <= round(0.7 * 999)
        assert out.y.gt(0).all()
        ts.append(out.t)
    for lo, hi in zip(ts, ts[1:]):
        assert (hi >= lo).all()  # same draws: a larger λ·y never lowers t …
        assert hi.float().mean() > lo.float().mean()  # … and raises it on average


def test_eta_mean_is_delta_eta_times_mean_saliency():
    B, N = 4000, 16
    S = torch.ones(B, N)
    out = ian(S, torch.Generator().manual_seed(0), delta_eta=0.8)
    resid = out.eta - 0.8 * out.s_tilde.mean(dim=1)  # = mean_j n_j ~ N(0, 1/N)
    assert abs(resid.mean().item()) < 4 / math.sqrt(N * B)
    assert resid.std().item() == pytest.approx(1 / math.sqrt(N), rel=0.05)
    assert out.eta.mean().item() == pytest.approx(0.8 * 1.25, abs=0.01)  # E[η] ≈ 1 by design
    # η follows the saliency: doubling S raises it by Δη·mean(S) on the same draws
    out2 = ian(2 * S, torch.Generator().manual_seed(0), delta_eta=0.8)
    torch.testing.assert_close(out2.eta - out.eta, torch.full((B,), 0.8))


def test_ian_is_reproducible_from_the_generator():
    S = torch.rand(4, 9)
    a, b = ian(S, torch.Generator().manual_seed(7)), ian(S, torch.Generator().manual_seed(7))
    assert torch.equal(a.t, b.t) and torch.equal(a.eta, b.eta)


def test_spread_eta_carries_how_unevenly_saliency_falls_while_mean_cannot():
    N = 16
    flat = torch.ones(1, N)  # attention spread evenly
    peaked = torch.full((1, N), 0.2)
    peaked[0, 0] = 1 + 0.8 * (N - 1)  # one dominant token; mean_j S_j = 1 as row-softmax saliency always has
    S = torch.cat([flat, peaked])
    mean = ian(S, torch.Generator().manual_seed(0), eta_stat="mean", perturb=0.0)
    spread = ian(S, torch.Generator().manual_seed(0), eta_stat="spread", perturb=0.0)
    # same draws: the paper's η is identical for both images up to the noise term; spread's differs by Δη·std
    noise = mean.eta - 0.8 * S.mean(dim=1)
    torch.testing.assert_close(spread.eta - noise, 0.8 * (S.mean(dim=1) + S.std(dim=1, unbiased=False)))
    assert float(spread.eta[1] - spread.eta[0]) > 2.0 and torch.equal(mean.t, spread.t)
    with pytest.raises(ByonError, match="eta"):
        ian(S, torch.Generator().manual_seed(0), eta_stat="max")
