import torch

from byon.corruption.patches import norm_pix, patchify, unpatchify


def test_patchify_round_trip_and_order():
    x = torch.randn(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    torch.testing.assert_close(unpatchify(p, 4, 3), x)
    # patch 1 is the top-right 4x4 block; values ordered (row, col, channel)
    assert torch.equal(p[0, 1].view(4, 4, 3), x[0, :, :4, 4:].permute(1, 2, 0))


def test_norm_pix_uses_unbiased_variance_and_eps():
    t = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    mean, var_unbiased = 2.5, 5.0 / 3.0
    expected = (t - mean) / (var_unbiased + 1e-6) ** 0.5
    torch.testing.assert_close(norm_pix(t), expected)
    const = norm_pix(torch.full((1, 1, 4), 3.0))
    assert torch.isfinite(const).all() and const.abs().max() == 0
