import pytest
import torch

from byon.corruption.masking import gather_tokens, masked_mean, random_masking, restore_tokens
from byon.errors import ByonError


@pytest.mark.parametrize("ratio,keep", [(0.75, 12), (0.6, 19), (0.0, 49), (0.5, 24)])
def test_exact_keep_count_and_mask_agree(ratio, keep):
    m = random_masking(8, 49, ratio, torch.Generator().manual_seed(0))
    assert m.ids_keep.shape == (8, keep)
    assert (m.mask.sum(1) == 49 - keep).all()
    # kept indices are exactly the unmasked positions
    visible = torch.zeros(8, 49, dtype=torch.bool).scatter(1, m.ids_keep, True)
    assert torch.equal(visible, ~m.mask)


def test_restore_order_inverts_the_shuffle():
    g = torch.Generator().manual_seed(1)
    m = random_masking(4, 16, 0.5, g)
    x = torch.arange(16.0).view(1, 16, 1).expand(4, 16, 3)
    kept = gather_tokens(x, m.ids_keep)
    restored = restore_tokens(kept, torch.full((1, 1, 3), -1.0), m.ids_restore)
    assert torch.equal(restored[~m.mask], x[~m.mask])
    assert (restored[m.mask] == -1).all()


def test_masks_repeat_for_a_seed_and_differ_across_seeds():
    a = random_masking(4, 49, 0.75, torch.Generator().manual_seed(3)).mask
    b = random_masking(4, 49, 0.75, torch.Generator().manual_seed(3)).mask
    c = random_masking(4, 49, 0.75, torch.Generator().manual_seed(4)).mask
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_an_error(ratio):
    with pytest.raises(ByonError, match=r"must be in \[0, 1\)"):
        random_masking(2, 49, ratio)


def test_masked_mean_counts_only_selected_tokens():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[True, False, True], [False, False, True]])
    assert masked_mean(v, m).item() == pytest.approx((1 + 3 + 6) / 3)


def test_block_masking_with_one_token_blocks_is_random_masking():
    from byon.corruption.masking import block_masking

    a = block_masking(5, 7, 1, 0.6, torch.Generator().manual_seed(4))
    assert torch.equal(a, random_masking(5, 49, 0.6, torch.Generator().manual_seed(4)).mask)
    assert (a.sum(1) == 30).all()  # SimMIM's ceil(49 · 0.6)


def test_block_masking_masks_whole_cropped_blocks():
    from byon.corruption.masking import block_masking

    m = block_masking(6, 7, 2, 0.6, torch.Generator().manual_seed(0)).view(6, 7, 7)
    padded = torch.zeros(6, 8, 8, dtype=torch.bool)
    padded[:, :7, :7] = m
    blocks = padded.view(6, 4, 2, 4, 2)
    # every 2×2 block is all-masked or all-visible (within the grid), and 16 − int(16·0.4) = 10 blocks are masked
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:7, :7] = True
    per_block = blocks.sum(dim=(2, 4))
    size = inside.view(4, 2, 4, 2).sum(dim=(1, 3))
    assert ((per_block == 0) | (per_block == size)).all()
    assert ((per_block == size) & (per_block > 0)).sum(dim=(1, 2)).eq(10).all()
    with pytest.raises(ByonError):
        block_masking(1, 7, 0, 0.6)


def test_token_mask_from_a_hand_built_mask():
    from byon.corruption.masking import token_mask

    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    m = token_mask(mask)
    assert m.ids_keep.tolist() == [[1, 3], [0, 1]]
    x = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 1)
    restored = restore_tokens(gather_tokens(x, m.ids_keep), torch.full((1, 1, 1), -1.0), m.ids_restore)
    assert torch.equal(restored[..., 0], torch.where(mask, -1.0, x[..., 0]))
    with pytest.raises(ValueError):
        token_mask(torch.tensor([[True, False], [False, False]]))
