"""DiffusionDecoder (DiffMAE): which inputs each prediction may read."""

import pytest
import torch

from byon.corruption.masking import random_masking
from byon.errors import ByonError
from byon.nn.decoders import DiffusionDecoder

D, N, P = 32, 49, 16


def make(attention: str) -> DiffusionDecoder:
    torch.manual_seed(0)
    return DiffusionDecoder(D, N, P, dim=24, depth=2, num_heads=2, attention=attention).eval()


def inputs(seed: int = 0):
    m = random_masking(2, N, 0.75, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(2, 1 + m.num_keep, D, generator=g), torch.randn(2, N, P, generator=g), m


@pytest.mark.parametrize("attention", ["joint", "cross", "cross-self"])
def test_reads_noisy_patches_only_at_masked_positions_and_depends_on_t(attention):
    dec = make(attention)
    lat, x_t, m = inputs()
    t = torch.tensor([10, 900])
    out = dec(lat, x_t, m, t)
    assert out.shape == (2, N, P)
    other = torch.where(m.mask.unsqueeze(-1), x_t, torch.randn_like(x_t))  # change only the visible positions
    torch.testing.assert_close(dec(lat, other, m, t), out)
    assert not torch.allclose(dec(lat, x_t, m, torch.tensor([11, 900]))[0][m.mask[0]], out[0][m.mask[0]])
    torch.testing.assert_close(dec(lat, x_t, m, torch.tensor([11, 900]))[1], out[1])  # t is per image
    # the visible latents reach the masked predictions
    assert not torch.allclose(dec(lat + 1.0, x_t, m, t)[m.mask], out[m.mask])
    if attention != "joint":
        assert out[~m.mask].abs().sum() == 0


@pytest.mark.parametrize("attention, coupled", [("joint", True), ("cross", False), ("cross-self", True)])
def test_noisy_tokens_see_each_other_except_in_the_cross_decoder(attention, coupled):
    dec = make(attention)
    lat, x_t, m = inputs()
    t = torch.tensor([10, 900])
    out = dec(lat, x_t, m, t)
    j = int(m.mask[0].nonzero()[0])  # change one masked patch's noisy input
    x2 = x_t.clone()
    x2[0, j] += 3.0
    out2 = dec(lat, x2, m, t)
    others = m.mask[0].clone()
    others[j] = False
    assert not torch.allclose(out2[0, j], out[0, j])
    assert torch.allclose(out2[0][others], out[0][others]) != coupled


def test_unknown_attention_is_a_user_error():
    with pytest.raises(ByonError, match="cross-self"):
        DiffusionDecoder(D, N, P, attention="crosself")
