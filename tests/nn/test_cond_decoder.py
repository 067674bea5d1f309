import pytest
import torch

from byon.corruption.masking import random_masking
from byon.nn.cond import AdaLNBlock
from byon.nn.decoders import CondDecoder

D, N, P = 32, 49, 16


def make(**kw) -> CondDecoder:
    torch.manual_seed(0)
    return CondDecoder(D, N, P, dim=24, depth=2, num_heads=2, **kw).eval()


def test_full_sequence_shapes_and_t_dependence():
    dec = make(mask_token=False)
    assert dec.mask_token is None
    lat = torch.randn(3, 1 + N, D)
    out = dec(lat, torch.tensor([0, 10, 999]))
    assert out.shape == (3, N, P)
    assert not torch.allclose(out, dec(lat, torch.tensor([500, 10, 999])))
    torch.testing.assert_close(out[1:], dec(lat, torch.tensor([500, 10, 999]))[1:])  # per image
    with pytest.raises(ValueError):
        dec(lat[:, :10], torch.zeros(3), ids_restore=torch.arange(N).expand(3, N))


def test_kept_tokens_path_unshuffles():
    """With nothing masked the kept-token path, fed in shuffled order, equals the full path."""
    dec = make()
    lat = torch.randn(2, 1 + N, D)
    m = random_masking(2, N, 0.0, torch.Generator().manual_seed(0))
    kept = torch.gather(lat[:, 1:], 1, m.ids_keep[..., None].expand(-1, -1, D))
    shuffled = torch.cat([lat[:, :1], kept], 1)
    t = torch.tensor([3, 700])
    torch.testing.assert_close(dec(shuffled, t, m.ids_restore), dec(lat, t), atol=1e-5, rtol=1e-5)


def test_kept_tokens_path_fills_masked_positions_with_the_mask_token():
    dec = make()
    m = random_masking(2, N, 0.6, torch.Generator().manual_seed(1))
    K = m.num_keep
    a = dec(torch.randn(2, 1 + K, D), torch.tensor([5, 5]), m.ids_restore)
    assert a.shape == (2, N, P)


def test_per_token_t_equal_everywhere_matches_per_image_t():
    for cond in ("add", "adaln"):
        dec = make(cond=cond, mask_token=False)
        if cond == "adaln":  # move off the zero init so t matters
            for p in dec.parameters():
                p.data += 0.01 * torch.randn_like(p)
        lat = torch.randn(2, 1 + N, D)
        t = torch.tensor([40, 900])
        torch.testing.assert_close(dec(lat, t[:, None].expand(2, N)), dec(lat, t), atol=1e-5, rtol=1e-5)


def test_adaln_zero_init_is_identity_and_ignores_t():
    blk = AdaLNBlock(24, 2)
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(blk(x, torch.randn(2, 24)), x)
    dec = make(cond="adaln", mask_token=False)
    lat = torch.randn(2, 1 + N, D)
    torch.testing.assert_close(dec(lat, torch.tensor([0, 0])), dec(lat, torch.tensor([999, 999])))


def test_adaln_zero_initialises_the_prediction_and_add_keeps_maes_init():
    """DiT / MaskDiT: the adaLN decoder's final Linear starts at zero (F ≡ 0); "add" (BYON's) keeps MAE's
    xavier init."""
    adaln, add = make(cond="adaln", mask_token=False), make(cond="add", mask_token=False)
    assert adaln.pred.weight.eq(0).all() and adaln.pred.bias.eq(0).all()
    lat = torch.randn(2, 1 + N, D)
    assert adaln(lat, torch.tensor([3, 700])).eq(0).all()
    bound = (6 / (24 + P)) ** 0.5  # xavier_uniform of Linear(24 → 16)
    assert 0.5 * bound < add.pred.weight.abs().max() <= bound and add.pred.bias.eq(0).all()
    assert add(lat, torch.tensor([3, 700])).abs().mean() > 0.05


def test_cond_none_ignores_t_and_extra_cond_vector_is_added():
    dec = make(cond="none", mask_token=False)
    lat = torch.randn(2, 1 + N, D)
    torch.testing.assert_close(dec(lat, torch.tensor([0, 1])), dec(lat, torch.tensor([999, 3])))
    assert not torch.allclose(dec(lat, cond=torch.randn(2, 24)), dec(lat))


def test_gradients_reach_the_timestep_mlp():
    dec = make(mask_token=False).train()
    dec(torch.randn(2, 1 + N, D), torch.tensor([1, 2])).pow(2).mean().backward()
    assert dec.t_embed.mlp[0].weight.grad.abs().sum() > 0
    assert dec.no_weight_decay() == {"mask_token", "pos_embed"}
