"""Per-sample draws: a sample's draws depend on (seed, step, its global-batch position) only."""

from __future__ import annotations

import pytest
import torch

from byon.corruption.masking import random_masking
from byon.draws import SampleDraws, rand, randint, randn, shared


def test_a_samples_draws_do_not_depend_on_the_other_samples_of_its_batch():
    whole = SampleDraws(0, 3, range(6))
    part = SampleDraws(0, 3, [1, 4])
    for draw in (lambda d, b: rand(d, b, 5), lambda d, b: randn(d, b, 2, 3), lambda d, b: randint(d, 0, 9, b, 4)):
        a, b = draw(whole, 6), draw(part, 2)
        assert torch.equal(a[[1, 4]], b)


def test_the_sequence_of_draws_repeats_and_steps_and_seeds_differ():
    def masks(seed: int, step: int) -> torch.Tensor:
        g = SampleDraws(seed, step, range(4))
        return torch.cat([rand(g, 4, 3), random_masking(4, 16, 0.75, g).mask.float()], 1)

    assert torch.equal(masks(0, 1), masks(0, 1))
    assert not torch.equal(masks(0, 1), masks(0, 2))
    assert not torch.equal(masks(0, 1), masks(1, 1))


def test_the_shared_generator_is_the_same_for_every_rank():
    a, b = SampleDraws(0, 7, [0, 2]), SampleDraws(0, 7, [1, 3])
    assert torch.equal(torch.rand(3, generator=shared(a)), torch.rand(3, generator=shared(b)))


def test_a_draw_for_another_batch_size_is_an_error():
    with pytest.raises(ValueError, match="local batch has 2 samples"):
        rand(SampleDraws(0, 0, range(2)), 4)


def test_a_plain_generator_draws_the_whole_tensor():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(rand(g, 2, 3), torch.rand(2, 3, generator=torch.Generator().manual_seed(0)))
