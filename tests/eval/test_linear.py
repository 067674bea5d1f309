from __future__ import annotations

import pytest
import torch

from byon.errors import ByonError
from byon.eval.linear import linear_heads, linear_probe, probe_grid


def _separable(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from a fixed random linear map (argmax of W x) with a margin; features scaled by 1e3
    and shifted, which the BatchNorm in the head must absorb."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, classes, generator=g)
    g.manual_seed(seed)
    x = torch.randn(4 * n, dim, generator=g)
    top2 = (x @ w).topk(2, dim=1).values
    x = x[(top2[:, 0] - top2[:, 1]) > 1.0][:n]
    return x * 1e3 + 50.0, (x @ w).argmax(1)


def test_linearly_separable_reaches_high_accuracy() -> None:
    train_f, train_y = _separable(600, 8, 5, seed=1)
    test_f, test_y = _separable(300, 8, 5, seed=2)
    r = linear_probe(train_f, train_y, test_f, test_y, epochs=30, batch_size=64)
    assert r["top1"] >= 97.0
    assert r["top5"] == 100.0
    assert r["train_loss"] < 0.3
    assert r["lr"] == pytest.approx(0.1 * 64 / 256)


def test_random_labels_stay_near_chance() -> None:
    train_f, _ = _separable(600, 8, 5, seed=1)
    test_f, test_y = _separable(300, 8, 5, seed=2)
    noise = torch.randint(0, 5, (600,), generator=torch.Generator().manual_seed(3))
    assert linear_probe(train_f, noise, test_f, test_y, epochs=5, batch_size=64)["top1"] < 45.0


def test_deterministic_for_a_seed() -> None:
    train_f, train_y = _separable(300, 6, 4, seed=3)
    test_f, test_y = _separable(100, 6, 4, seed=4)
    kw = dict(epochs=3, batch_size=50)
    a = linear_probe(train_f, train_y, test_f, test_y, seed=7, **kw)
    b = linear_probe(train_f, train_y, test_f, test_y, seed=7, **kw)
    c = linear_probe(train_f, train_y, test_f, test_y, seed=8, **kw)
    assert a == b
    assert a["train_loss"] != c["train_loss"]


def test_restores_thread_count_and_checks_inputs() -> None:
    train_f, train_y = _separable(50, 4, 3, seed=5)
    threads = torch.get_num_threads()
    linear_probe(train_f, train_y, train_f, train_y, epochs=1, batch_size=49)  # last batch of 1 is dropped
    assert torch.get_num_threads() == threads
    with pytest.raises(ByonError, match="did you mean"):
        linear_probe(train_f, train_y, train_f, train_y, optimizer="sgdd")
    with pytest.raises(ByonError):
        linear_probe(train_f[:1], train_y[:1], train_f, train_y)


def test_heads_on_features_of_one_width_each_equal_a_separate_probe() -> None:
    """Heads start from the same seeded draw and see the batches a lone probe would, so training them together
    changes nothing: each equals `linear_probe` on its feature and lr, bitwise."""
    train_a, train_y = _separable(200, 6, 4, seed=3)
    test_a, test_y = _separable(80, 6, 4, seed=4)
    train_b, test_b = train_a.flip(1) * -0.5, test_a.flip(1) * -0.5
    train = {"a": train_a, "b": train_b}
    test = {"a": test_a, "b": test_b}
    heads = [("a", 0.05), ("b", 0.2), ("a", 0.2)]
    together = linear_heads(train, train_y, test, test_y, heads, epochs=3, batch_size=32, seed=5)
    assert [(h["feature"], h["lr"]) for h in together] == heads
    for h in together:
        alone = linear_probe(train[h["feature"]], train_y, test[h["feature"]], test_y, epochs=3, batch_size=32,
                             lr=h["lr"], seed=5)
        assert (h["top1"], h.get("top5"), h["train_loss"]) == (alone["top1"], alone.get("top5"), alone["train_loss"])
    assert together[0]["train_loss"] != together[2]["train_loss"]  # the lr does matter


def test_probe_grid_covers_features_times_lrs_and_picks_the_best() -> None:
    train_f, train_y = _separable(300, 8, 5, seed=1)
    test_f, test_y = _separable(100, 8, 5, seed=2)
    noise = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    train = {"good": train_f, "noise": noise, "both": torch.cat([train_f, noise], 1)}
    test = {"good": test_f, "noise": torch.randn(100, 3), "both": torch.cat([test_f, torch.randn(100, 3)], 1)}
    r = probe_grid(train, train_y, test, test_y, ["good", "noise", "both"], blrs=(0.01, 0.1, 1.0), batch_size=64,
                   epochs=5)
    assert [(h["feature"], h["blr"]) for h in r["heads"]] == [(f, b) for f in ("good", "noise", "both")
                                                              for b in (0.01, 0.1, 1.0)]
    assert all(h["lr"] == pytest.approx(h["blr"] * 64 / 256) for h in r["heads"])
    assert r["best"]["top1"] == max(h["top1"] for h in r["heads"]) and r["best"]["feature"] != "noise"
    for ft, best in r["best_per_feature"].items():
        assert best["top1"] == max(h["top1"] for h in r["heads"] if h["feature"] == ft)
    assert r["best_per_feature"]["good"]["top1"] > 90.0 > r["best_per_feature"]["noise"]["top1"]


def test_probe_grid_chooses_on_held_out_training_rows_without_looking_at_test() -> None:
    train_f, train_y = _separable(300, 8, 5, seed=1)
    test_f, test_y = _separable(100, 8, 5, seed=2)
    noise = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    train = {"good": train_f, "noise": noise}
    test = {"good": test_f, "noise": torch.randn(100, 3, generator=torch.Generator().manual_seed(1))}
    kw = dict(features=["good", "noise"], blrs=(0.01, 1.0), batch_size=64, epochs=5, choose_on=60)
    r = probe_grid(train, train_y, test, test_y, **kw)
    # test labels the heads cannot predict: a choice made on test would move, one made on held-out train can't
    shuffled = probe_grid(train, train_y, test, test_y[torch.randperm(100, generator=torch.Generator().manual_seed(3))],
                          **kw)
    pick = lambda res: (res["best"]["feature"], res["best"]["blr"])  # noqa: E731
    assert pick(r) == pick(shuffled) and r["best"]["feature"] == "good"
    assert r["chosen_on"] == "60 held-out training rows" and len(r["choice"]) == 4
    assert r["best"] in r["heads"]  # the reported number is the chosen head's test top-1
    chosen = max(r["choice"], key=lambda c: c["top1"])
    assert pick(r) == (chosen["feature"], chosen["blr"])
    with pytest.raises(ByonError, match="choose_on must be in"):
        probe_grid(train, train_y, test, test_y, **(kw | {"choose_on": 299}))


def test_probe_grid_rejects_unknown_features_and_bad_lrs() -> None:
    f, y = _separable(50, 4, 3, seed=5)
    with pytest.raises(ByonError, match="did you mean 'cls'"):
        probe_grid({"cls": f}, y, {"cls": f}, y, ["clss"], epochs=1)
    with pytest.raises(ByonError, match="positive base lrs"):
        probe_grid({"cls": f}, y, {"cls": f}, y, ["cls"], blrs=(0.1, 0.0), epochs=1)
