import pytest
import torch

from byon.data import load_dataset
from byon.errors import ByonError


def test_val_is_a_stratified_holdout_disjoint_from_train_and_independent_of_the_run_seed():
    full = load_dataset("synthetic", "train")
    tr = load_dataset("synthetic", "train", val_size=400, seed=3)
    va = load_dataset("synthetic", "val", val_size=400, seed=7)
    assert len(tr) == len(full) - 400 and len(va) == 400
    # every image of the training split is in exactly one part
    key = lambda d: {bytes(x.numpy()) for x in d.images}  # noqa: E731
    assert key(tr).isdisjoint(key(va)) and key(tr) | key(va) == key(full)
    # stratified: the class shares of val follow the training split's
    share = torch.bincount(full.labels, minlength=10) * 400 / len(full)
    assert (torch.bincount(va.labels, minlength=10) - share).abs().max() <= 1
    # the same images for every run seed; another val_seed, other images
    assert torch.equal(load_dataset("synthetic", "val", val_size=400).images, va.images)
    assert not torch.equal(load_dataset("synthetic", "val", val_size=400, val_seed=1).images, va.images)


def test_subset_is_taken_after_the_holdout_and_test_is_untouched():
    va = load_dataset("synthetic", "val", val_size=400)
    sub = load_dataset("synthetic", "train", val_size=400, subset=100)
    assert len(sub) == 100
    assert {bytes(x.numpy()) for x in sub.images}.isdisjoint({bytes(x.numpy()) for x in va.images})
    assert torch.equal(load_dataset("synthetic", "test", val_size=400).images, load_dataset("synthetic", "test").images)


@pytest.mark.parametrize(("split", "size", "words"), [("val", 0, "data.val_size"), ("train", 2000, "leaves no"),
                                                        ("train", -1, "val_size must be")])
def test_bad_val_settings_are_one_line_errors(split, size, words):
    with pytest.raises(ByonError, match=words):
        load_dataset("synthetic", split, val_size=size)
