import json

import pytest

from byon.engine.run import train
from byon.errors import ByonError
from byon.eval.frozen import evaluate
from byon.methods import load_config


def _run(tmp_path, tiny_overrides, val_size):
    o = tiny_overrides | {"method": "mae"}
    o["data"] = {"dataset": "synthetic", "val_size": val_size}
    o["train"] = dict(o["train"], max_steps=2)
    return train(load_config(None, o), tmp_path / f"run{val_size}")


def test_val_eval_uses_the_holdout_and_keeps_test_results_apart(tmp_path, tiny_overrides):
    run = _run(tmp_path, tiny_overrides, 400)
    val = evaluate("knn", run, "synthetic", split="val")
    test = evaluate("knn", run, "synthetic")
    assert val["split"] == "val" and test["split"] == "test"
    assert json.loads((run / "eval" / "knn-synthetic-val.json").read_text())["top1"] == val["top1"]
    assert json.loads((run / "eval" / "knn-synthetic.json").read_text())["top1"] == test["top1"]
    feats = sorted((run / "features").glob("synthetic-*.pt"))
    assert any("-val-" in f.name for f in feats) and any("-train-all-val400-" in f.name for f in feats)


def test_val_eval_of_a_run_without_holdout_is_refused(tmp_path, tiny_overrides):
    run = _run(tmp_path, tiny_overrides, 0)
    with pytest.raises(ByonError, match="no held-out val split"):
        evaluate("knn", run, "synthetic", split="val")
