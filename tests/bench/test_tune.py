import json

import pytest

from byon.bench.tune import Axis, bench_tune, cells, load_grid_file, parse_axis
from byon.data import load_dataset
from byon.errors import ByonError


def test_parse_axis_keeps_lists_whole_and_labels_them():
    ax = parse_axis("data.crop_scale=[1,1],[0.6,1.0]")
    assert ax.values == (("1-1", ("data.crop_scale=[1,1]",)), ("0.6-1.0", ("data.crop_scale=[0.6,1.0]",)))
    with pytest.raises(ByonError, match="SECTION.KEY"):
        parse_axis("blr=1,2")


def test_grid_file_bundles_and_cartesian_cells(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("axes:\n  aug:\n    none: {data.crop_scale: [1.0, 1.0], data.crop_ratio: [1.0, 1.0]}\n"
                 "    crop: {data.crop_scale: [0.6, 1.0]}\n  data.hflip: [true, false]\n")
    axes = load_grid_file(f)
    got = cells(axes)
    assert [c for c, _ in got] == ["aug=none_hflip=True", "aug=none_hflip=False", "aug=crop_hflip=True",
                                   "aug=crop_hflip=False"]
    assert got[0][1] == ("data.crop_scale=[1.0, 1.0]", "data.crop_ratio=[1.0, 1.0]", "data.hflip=true")
    f.write_text("axes: []\n")
    with pytest.raises(ByonError, match="axes"):
        load_grid_file(f)


def test_tune_scores_on_val_confirms_the_best_and_names_a_winner(tmp_path):
    axes = [Axis("optim.blr", (("a", ("optim.blr=1e-3",)), ("b", ("optim.blr=1e-4",)))),
            parse_axis("data.hflip=true,false")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    # the smoke protocol trains 1 epoch: a 1-epoch screen is already full length, so the best cell wins as is
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=3"])
    where = results / "tune" / "smoke" / "mae"
    recs = {p.name: json.loads(p.read_text()) for p in where.glob("*.json")}
    assert len(recs) == 4
    for r in recs.values():
        assert r["metrics"]["split"] == "val" and "lowshot10" not in r["metrics"]
        assert r["config"]["data"]["val_size"] == 400
        assert "lowshot" not in r["metrics"]["protocol"]
    best = max(recs.values(), key=lambda r: (r["metrics"]["linear"], r["metrics"]["knn"]))
    winner = json.loads((results / "tune" / "smoke" / "mae-winner.json").read_text())
    score = lambda m: (m["linear"], m["knn"])  # noqa: E731
    assert score(winner["val"]) == score(best["metrics"])
    assert winner["cell"] in {r["name"].split(":", 1)[1] for r in recs.values()}
    assert f"**Winner: `{winner['cell']}`**" in table.read_text()
    gflops = recs[next(iter(recs))]["flops_per_image"] / 1e9  # each cell's cost stands beside its accuracy
    assert "| GFLOPs/img |" in table.read_text() and f" | {gflops:.3f} |" in table.read_text()
    # no test-split evaluation was written in any run directory
    assert not list(runs.glob("**/eval/*-synthetic.json"))
    assert len(list(runs.glob("**/eval/knn-synthetic-val.json"))) == 4
    # raw pixels on the same val split, the table's reference: the 400 held-out images against the rest
    pixels = json.loads((results / "tune" / "smoke" / "pixels-val.json").read_text())
    assert pixels["split"] == "val" and pixels["metrics"]["knn_raw"] > 30.0  # far above chance on 10 shapes
    assert pixels["query_images"] == 400
    assert pixels["reference_images"] == len(load_dataset("synthetic", "train")) - 400
    assert f"Raw pixels on the same split (no model): kNN {pixels['metrics']['knn_raw']:.2f}" in table.read_text()


def test_tune_shards_split_the_cells(tmp_path):
    axes = [parse_axis("optim.blr=1e-3,1e-4")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    # the first shard's cell is done, the second's is not: a partial table, no winner
    [part] = bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"], shard=(0, 2))
    assert len(list((results / "tune" / "smoke" / "mae").glob("*.json"))) == 1
    # --stage table renders what has finished and runs nothing
    [same] = bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"], stage="table")
    assert same == part and len(list((results / "tune" / "smoke" / "mae").glob("*.json"))) == 1
    assert "**Screen unfinished**: 1 cell(s) still to run (blr=1e-4)" in part.read_text()
    assert "Winner" not in part.read_text() and not (results / "tune" / "smoke" / "mae-winner.json").exists()
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"], shard=(1, 2))
    assert "Winner" in table.read_text()
    # a second grid sharing a cell reuses its record and keeps its own table and winner
    [step] = bench_tune("smoke", ["mae"], [parse_axis("optim.blr=1e-3")], runs, results,
                        extra=["train.max_steps=2"], name="{method}-lr")
    assert step.name == "mae-lr.md" and (results / "tune" / "smoke" / "mae-lr-winner.json").is_file()
    assert len(list((results / "tune" / "smoke" / "mae").glob("*.json"))) == 2


def test_a_short_screen_is_confirmed_at_the_protocols_length(tmp_path, monkeypatch):
    import dataclasses

    from byon.bench.quality import PROTOCOLS

    monkeypatch.setitem(PROTOCOLS, "smoke", dataclasses.replace(PROTOCOLS["smoke"], epochs=2))
    axes = [parse_axis("optim.blr=1e-3,1e-4,1e-5")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    kw = dict(extra=["data.subset=256"], epochs=1, confirm=2)
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, stage="screen", **kw)
    assert "Confirmation (2 epochs, the best 2 screen cells): not run yet." in table.read_text()
    assert not (results / "tune" / "smoke" / "mae-winner.json").exists()
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, stage="confirm", **kw)
    recs = sorted(p.name for p in (results / "tune" / "smoke" / "mae").glob("*-e2-seed0.json"))
    assert len(recs) == 2  # only the best two screen cells ran at full length
    winner = json.loads((results / "tune" / "smoke" / "mae-winner.json").read_text())
    assert f"{winner['cell']}-e2-seed0.json" in recs and winner["screen_epochs"] == 1 and winner["epochs"] == 2
    assert "## Confirmation (2 epochs, the best 2 screen cells)" in table.read_text()
    # the third cell's settings trained at full length by another step (another cell name): that record joins the
    # confirmation as a copy, without training, and the winner has to beat it
    [third] = [c for c in ("blr=1e-3", "blr=1e-4", "blr=1e-5") if f"{c}-e2-seed0.json" not in recs]
    old = Axis("step", (("old", (f"optim.{third}",)),))
    bench_tune("smoke", ["mae"], [old], runs, results, name="{method}-old", extra=["data.subset=256"])
    ran = len(list(runs.glob("tune/smoke/mae/*")))
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, stage="table", **kw)
    copy = json.loads((results / "tune" / "smoke" / "mae" / f"{third}-e2-seed0.json").read_text())
    assert copy["same_run_as"] == "step=old-e2-seed0.json" and len(list(runs.glob("tune/smoke/mae/*"))) == ran
    text = table.read_text()
    assert "best 2 screen cells, and 1 whose 2-epoch record was already on file, not re-run)" in text
    assert f"| {third} |" in text.split("## Confirmation")[1]


def test_a_compute_budget_keeps_costlier_cells_out_of_the_choice(tmp_path):
    axes = [parse_axis("mae.decoder_depth=1,4")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"])
    recs = {p.name: json.loads(p.read_text()) for p in (results / "tune" / "smoke" / "mae").glob("*.json")}
    gflops = sorted(r["flops_per_image"] / 1e9 for r in recs.values())
    assert len(gflops) == 2 and gflops[0] < gflops[1]
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"],
                         max_gflops=(gflops[0] + gflops[1]) / 2)
    winner = json.loads((results / "tune" / "smoke" / "mae-winner.json").read_text())
    assert winner["cell"] == "decoder_depth=1" and "GFLOPs/img" in winner["selected_by"]
    text = table.read_text()
    assert "| decoder_depth=4 † |" in text and "| decoder_depth=1 |" in text and "Budget: at most" in text
    with pytest.raises(ByonError, match="over --max-gflops"):
        bench_tune("smoke", ["mae"], axes, runs, results, extra=["train.max_steps=2"], max_gflops=gflops[0] / 2)


def test_a_screen_only_grid_renders_without_confirming_or_naming_a_winner(tmp_path):
    axes = [parse_axis("optim.blr=1e-3,1e-4")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    kw = dict(extra=["train.max_steps=2"], epochs=1, confirm=0)
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, stage="all", **kw)
    assert sorted(p.name for p in (results / "tune" / "smoke" / "mae").glob("*.json")) == [
        "blr=1e-3-e1-seed0.json", "blr=1e-4-e1-seed0.json"]  # nothing ran at the protocol's length
    assert "Screen only" in table.read_text() and not (results / "tune" / "smoke" / "mae-winner.json").exists()
    with pytest.raises(ByonError, match="--confirm"):
        bench_tune("smoke", ["mae"], axes, runs, results, confirm=-1)


def test_a_cell_over_the_budget_with_a_full_record_is_shown_but_never_wins(tmp_path, monkeypatch):
    import dataclasses

    from byon.bench.quality import PROTOCOLS

    monkeypatch.setitem(PROTOCOLS, "smoke", dataclasses.replace(PROTOCOLS["smoke"], epochs=2))
    axes = [parse_axis("mae.decoder_depth=1,4")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    kw = dict(extra=["data.subset=256"], epochs=1)
    bench_tune("smoke", ["mae"], axes, runs, results, confirm=2, **kw)  # no budget yet: both run at 2 epochs
    recs = {p.name: json.loads(p.read_text()) for p in (results / "tune" / "smoke" / "mae").glob("*-e2-seed0.json")}
    cheap, dear = sorted(r["flops_per_image"] for r in recs.values())
    [table] = bench_tune("smoke", ["mae"], axes, runs, results, confirm=2, stage="table",
                         max_gflops=(cheap + dear) / 2e9, **kw)
    confirmation = table.read_text().split("## Confirmation")[1]
    assert "| decoder_depth=4 † |" in confirmation and "| decoder_depth=1 |" in confirmation
    assert json.loads((results / "tune" / "smoke" / "mae-winner.json").read_text())["cell"] == "decoder_depth=1"
