from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from byon.corruption.multiblock import MultiBlockMaskCollator, block_size, gather_blocks
from byon.errors import ByonError
from byon.methods.context import step_generator


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_mask(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(..., K) indices → (..., n) bool."""
    m = torch.zeros(*ids.shape[:-1], n, dtype=torch.bool)
    return m.scatter(-1, ids, True)


def rect(ids: torch.Tensor, W: int) -> tuple[int, int]:
    """(h, w) of the rectangle the raster-ordered indices fill; asserts they fill one exactly."""
    rows, cols = ids // W, ids % W
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert h * w == ids.numel()
    assert torch.equal(ids, torch.sort(ids).values)
    return h, w


def test_block_size_is_the_official_rounding_rule():
    # keep = int(49·0.15) = 7: h = round(sqrt(7·0.75)) = 2, w = round(sqrt(7/0.75)) = 3
    assert block_size((7, 7), 0.15, 0.75) == (2, 3)
    assert block_size((7, 7), 0.2, 1.5) == (4, 2)  # keep 9: round(3.67), round(2.45)
    assert block_size((7, 7), 1.0, 1.0) == (7, 7)  # may span the grid (the official code stops at 6)
    assert block_size((14, 14), 0.85, 1.0) == (13, 13)  # keep 166 → 12.88


@pytest.mark.parametrize("grid,min_keep", [(7, 4), (14, 10)])
def test_block_counts_shapes_and_ranges(grid, min_keep):
    c = MultiBlockMaskCollator(grid, min_keep=min_keep)
    N = grid * grid
    for seed in range(8):
        m = c.sample(16, gen(seed))
        B, M, K_t = m.targets.shape
        assert (B, M) == (16, 4) and m.context.shape[0] == 16
        sizes = {rect(m.targets[b, j], grid) for b in range(B) for j in range(M)}
        assert len(sizes) == 1  # one block size per batch, as the official collator
        (h, w), = sizes
        if grid == 14:  # enough resolution for the ranges to show through the rounding
            assert 0.15 - 0.03 <= h * w / N <= 0.2 + 0.03
            assert 0.75 - 0.2 <= h / w <= 1.5 + 0.2
        ctx = m.context
        assert ctx.shape[1] > min_keep
        assert torch.equal(ctx, torch.sort(ctx, dim=1).values) and (ctx[:, 1:] != ctx[:, :-1]).all()


def test_context_lies_in_one_large_square_block_and_misses_every_target():
    c = MultiBlockMaskCollator(14, min_keep=10)
    for seed in range(8):
        m = c.sample(16, gen(seed))
        assert (m.relaxed == 0).all()
        ctx, tgt = as_mask(m.context, 196), as_mask(m.targets, 196).any(1)
        assert not (ctx & tgt).any()
        rows, cols = m.context // 14, m.context % 14
        # spans of the kept tokens fit in a side-13 or side-14 square (scale 0.85–1.0, aspect 1)
        assert ((rows.amax(1) - rows.amin(1)) < 14).all() and ((cols.amax(1) - cols.amin(1)) < 14).all()


def test_relaxation_only_drops_the_last_targets_exclusion():
    # a tiny grid where a context minus 4 targets often has ≤ min_keep tokens
    c = MultiBlockMaskCollator(5, target_scale=(0.3, 0.3), target_aspect=(1.0, 1.0), context_scale=(0.4, 0.4),
                               min_keep=3)
    m = c.sample(64, gen(0))
    assert m.relaxed.max() > 0
    ctx, tgt = as_mask(m.context, 25), as_mask(m.targets, 25)
    for b in range(64):
        kept = 4 - int(m.relaxed[b])
        assert not (ctx[b] & tgt[b, :kept].any(0)).any()


def test_raster_truncation_keeps_the_first_indices_up_to_the_batch_minimum():
    c = MultiBlockMaskCollator(7, min_keep=4, truncate="raster")
    m = c.sample(64, gen(3))
    counts = m.context_mask.sum(1)
    assert m.context.shape[1] == int(counts.min()) and counts.max() > counts.min()
    for b in range(64):
        assert torch.equal(m.context[b], m.context_mask[b].nonzero()[: m.context.shape[1], 0])


def test_random_truncation_is_the_default_and_keeps_an_equal_sized_subset_of_each_context():
    c = MultiBlockMaskCollator(7, min_keep=4)
    assert c.truncate == "random"
    m = c.sample(64, gen(3))
    k = int(m.context_mask.sum(1).min())
    assert m.context.shape == (64, k) and m.context_mask.sum(1).max() > k  # some images were cut
    assert torch.equal(m.context, torch.sort(m.context, dim=1).values) and (m.context[:, 1:] != m.context[:, :-1]).all()
    assert not (as_mask(m.context, 49) & ~m.context_mask).any()  # only context tokens
    again = c.sample(64, gen(3))
    assert torch.equal(m.context, again.context) and torch.equal(m.context_mask, again.context_mask)
    raster = MultiBlockMaskCollator(7, min_keep=4, truncate="raster").sample(64, gen(3))
    assert torch.equal(raster.context_mask, m.context_mask)  # the same contexts, only the cut differs
    assert not torch.equal(raster.context, m.context)


def row_bias(truncate: str) -> float:
    """Mean over images and seeds of (mean row of the kept tokens − mean row of the full context)."""
    c = MultiBlockMaskCollator(7, min_keep=4, truncate=truncate)
    diffs = []
    for seed in range(8):
        m = c.sample(128, gen(seed))
        full = (m.context_mask * (torch.arange(49) // 7)).sum(1) / m.context_mask.sum(1)
        diffs.append((m.context // 7).float().mean(1) - full)
    return torch.cat(diffs).mean().item()


def test_random_truncation_is_not_biased_to_the_top_rows():
    # raster-first drops the bottom rows: the kept tokens sit well above the context's centre
    assert row_bias("raster") < -0.5  # −1.24: over a row above
    assert abs(row_bias("random")) < 0.05  # its expectation is 0; the standard error over 1024 images is 0.01


def test_unknown_truncation_is_a_one_line_error():
    msg = r"unknown ijepa.truncate 'rastr' \(did you mean 'raster'\?\); valid: random, raster"
    with pytest.raises(ByonError, match=msg):
        MultiBlockMaskCollator(7, min_keep=4, truncate="rastr", name="ijepa")


def test_reproducible_and_a_function_of_the_generator_only():
    c = MultiBlockMaskCollator(7, min_keep=4)
    torch.manual_seed(1)
    a = c.sample(8, gen(5))
    torch.manual_seed(2)  # the global RNG plays no part
    b = c.sample(8, gen(5))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    other = c.sample(8, gen(6))
    assert not (torch.equal(a.context, other.context) and torch.equal(a.targets, other.targets))


def _collate(samples, collator, seed):
    """A DataLoader collate_fn: the generator comes from the batch's step (the first sample here)."""
    return collator(samples, step_generator(seed, int(samples[0]), 0))


def test_same_masks_in_any_worker():
    c = MultiBlockMaskCollator(7, min_keep=4)
    data = list(range(0, 32))
    fn = partial(_collate, collator=c, seed=0)

    def run(workers: int) -> list:
        loader = DataLoader(data, batch_size=8, collate_fn=fn, num_workers=workers)
        return [(x.clone(), m.context.clone(), m.targets.clone()) for x, m in loader]

    main, workers = run(0), run(2)
    for (x0, c0, t0), (x1, c1, t1) in zip(main, workers):
        assert torch.equal(x0, x1) and torch.equal(c0, c1) and torch.equal(t0, t1)
    assert not torch.equal(main[0][2], main[1][2])  # batches differ from each other


def test_min_keep_must_stay_below_the_smallest_block():
    with pytest.raises(ByonError, match="min_keep=6 but a target block"):
        MultiBlockMaskCollator(7, min_keep=6)
    with pytest.raises(ByonError, match="target_scale"):
        MultiBlockMaskCollator(7, target_scale=(0.3, 0.2), min_keep=4)


def test_allow_overlap_keeps_the_whole_context_block():
    c = MultiBlockMaskCollator(7, min_keep=4, allow_overlap=True)
    m = c.sample(4, gen(0))
    assert m.context.shape[1] in (36, 49)  # a 6×6 or 7×7 block, targets not removed


def test_gather_blocks():
    x = torch.arange(2 * 5 * 3).view(2, 5, 3)
    ids = torch.tensor([[[0, 4]], [[1, 2]]])
    out = gather_blocks(x, ids)
    assert out.shape == (2, 1, 2, 3)
    assert torch.equal(out[1, 0, 1], x[1, 2]) and torch.equal(out[0, 0, 1], x[0, 4])
