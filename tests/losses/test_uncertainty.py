import math

import pytest
import torch

from byon.errors import ByonError
from byon.losses import sue_weight


def _with_token_errors(errors: list[float], P: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """target 0, recon with |error| = errors[i] on every value of token i (signs alternate)."""
    signs = torch.tensor([1.0, -1.0]).repeat(P // 2)
    recon = torch.tensor(errors)[:, None] * signs[None, :]
    return recon.unsqueeze(0), torch.zeros_like(recon).unsqueeze(0)


def test_perfect_reconstruction_gives_one():
    x = torch.randn(3, 10, 12)
    torch.testing.assert_close(sue_weight(x, x.clone()), torch.ones(3))


def test_hand_computed_weights_fall_as_error_grows():
    # d = [0, .5, 1, 1.5] → U = tanh(d/2) = [0, .245, .462, .635] → μ = [1, 1, 1, 0]
    recon, target = _with_token_errors([0.0, 0.5, 1.0, 1.5])
    torch.testing.assert_close(sue_weight(recon, target), torch.tensor([0.75]))
    # doubled: d = [0, 1, 2, 3] → U = [0, .462, .762, .905] → μ = [1, 1, 0, 0]
    torch.testing.assert_close(sue_weight(2 * recon, target), torch.tensor([0.5]))
    prev = 1.0
    for scale in (0.0, 0.5, 1.0, 2.0, 4.0, 100.0):
        w = sue_weight(scale * recon, target).item()
        assert w <= prev
        prev = w
    assert prev == 0.25  # only the exact token survives


def test_threshold_sits_at_d_equal_two_atanh_tau():
    edge = 2 * math.atanh(0.5)
    recon, target = _with_token_errors([edge - 1e-3, edge + 1e-3])
    torch.testing.assert_close(sue_weight(recon, target, tau_u=0.5), torch.tensor([0.5]))


def test_no_gradient_flows():
    recon = torch.randn(2, 5, 4, requires_grad=True)
    w = sue_weight(recon, torch.zeros(2, 5, 4))
    assert not w.requires_grad


def test_literal_sign_is_always_one():
    recon, target = _with_token_errors([0.0, 5.0, 50.0, 500.0])
    torch.testing.assert_close(sue_weight(recon, target, sign="literal"), torch.tensor([1.0]))
    with pytest.raises(ByonError):
        sue_weight(recon, target, sign="literl")


def test_token_subset_restricts_the_mean():
    recon, target = _with_token_errors([0.0, 0.0, 9.0, 9.0])
    tokens = torch.tensor([[True, False, True, False]])
    torch.testing.assert_close(sue_weight(recon, target, tokens=tokens), torch.tensor([0.5]))
    torch.testing.assert_close(sue_weight(recon, target, tokens=torch.zeros(1, 4, dtype=torch.bool)),
                               torch.tensor([0.0]))
