import dataclasses
import json

import pytest
import torch

from byon.bench import quality
from byon.bench.quality import PROTOCOLS, bench_quality, bench_sweep, run_name
from byon.config import save_config
from byon.engine.run import train
from byon.errors import ByonError
from byon.methods import load_config
from byon.provenance import git_commit, git_dirty, hardware


@pytest.fixture
def smoke(monkeypatch):
    """The smoke protocol with 2 low-shot epochs (not the default 100), to see that the protocol's count is used."""
    monkeypatch.setitem(PROTOCOLS, "smoke", dataclasses.replace(PROTOCOLS["smoke"], lowshot_epochs=2))
    return PROTOCOLS["smoke"]


def test_quality_writes_one_json_per_run_and_skips_finished_runs(tmp_path, smoke):
    runs, results = tmp_path / "runs", tmp_path / "results"
    # train.num_threads changes no result: the run keeps its plain name (as the committed fmnist-cpu runs)
    paths = bench_quality("smoke", ["mae", "random-init", "pixels"], [0], runs, results,
                          extra=["train.num_threads=1"])
    assert [p.name for p in paths] == ["mae-seed0.json", "random-init-seed0.json", "pixels.json"]
    rec = json.loads(paths[0].read_text())
    m = rec["metrics"]
    for k in ("knn_cls", "knn_mean", "linear_cls", "linear_mean", "lowshot5_cls", "lowshot5_mean"):
        assert 0.0 <= m[k] <= 100.0, k
    assert rec["flops_per_image"] > 0 and rec["seed"] == 0 and rec["config"]["method"] == "mae"
    assert rec["overrides"] == ["train.num_threads=1"] and rec["config"]["train"]["num_threads"] == 1
    ft = m["protocol"].pop("finetune")
    assert m["protocol"] == {"features": ["cls", "mean"], "knn_k": 20, "knn_temperature": 0.07, "linear_epochs": 3,
                             "lowshot": [5], "lowshot_draws": 2, "lowshot_epochs": 2}
    # the protocol's fine-tuning: its fixed recipe, on its labelled subset, scored on test
    assert (ft["epochs"], ft["subset"], ft["blr"], ft["layer_decay"]) == (1, 128, 5e-4, 0.75)
    assert 0.0 <= m["finetune"] <= 100.0 and m["finetune_seconds"] > 0
    (path,) = (runs / "smoke" / "mae-seed0" / "eval").glob("finetune-synthetic-*.json")  # named after the recipe
    fine = json.loads(path.read_text())
    assert fine["top1"] == m["finetune"] and fine["train_images"] == 128 and fine["split"] == "test"
    low = json.loads((runs / "smoke" / "mae-seed0" / "eval" / "lowshot-synthetic-draws=2,epochs=2,shots=5.json"
                      ).read_text())
    assert low["epochs"] == 2 and low["draws"] == 2
    assert isinstance(rec["dirty"], bool) and rec["eval_env"]["dirty"] == git_dirty()
    assert rec["eval_env"]["commit"] == git_commit() and rec["command"]
    assert json.loads(paths[1].read_text())["steps"] == 0
    pix = json.loads(paths[2].read_text())["metrics"]
    assert pix["knn_raw"] > 30.0  # 10 synthetic shape classes: raw pixels are far above chance
    mtime = paths[0].stat().st_mtime_ns
    assert bench_quality("smoke", ["mae"], [0], runs, results)[0].stat().st_mtime_ns == mtime

    # a finished run is evaluated again, not retrained: the record keeps its training environment
    summary_path = runs / "smoke" / "mae-seed0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary |= {"commit": "trained-at", "hardware": "trained-on", "torch": "trained-with", "dirty": True}
    summary_path.write_text(json.dumps(summary))
    paths[0].unlink()
    again = json.loads(bench_quality("smoke", ["mae"], [0], runs, results)[0].read_text())
    assert (again["commit"], again["hardware"], again["torch"], again["dirty"]) == \
        ("trained-at", "trained-on", "trained-with", True)
    assert again["eval_env"]["hardware"] == hardware() and again["overrides"] == []
    assert again["config"] == rec["config"]  # the run's own config.yaml (num_threads 1), not the defaults


def test_result_changing_overrides_name_the_run():
    assert run_name("mae", None) == run_name("mae", []) == "mae"
    quiet = ["train.num_threads=1", "train.progress=false", "train.log_every_n_steps=5",
             "train.ckpt_every_steps=10", "train.accelerator=cpu"]
    assert run_name("mae", quiet) == "mae"
    a = run_name("mae", ["mae.mask_ratio=0.5", "optim.blr=1e-3"])
    assert a.startswith("mae-") and len(a) == len("mae-") + 8
    assert run_name("mae", ["optim.blr=1e-3", "train.num_threads=2", "mae.mask_ratio=0.5"]) == a  # order, quiet
    assert run_name("mae", ["mae.mask_ratio=0.6", "optim.blr=1e-3"]) != a
    assert run_name("mae", ["train.devices=2"]) != "mae"  # another global batch, another lr


def test_a_run_dir_of_another_config_is_an_error(tmp_path, smoke):
    """The run directory is checked before anything trains or evaluates in it."""
    run = tmp_path / "runs" / "smoke" / "mae-seed0"
    run.mkdir(parents=True)
    over = {"method": "mae", "data": {"dataset": "synthetic"}, "model": {"preset": "vit-test"},
            "train": {"epochs": 1, "batch_size": 64, "seed": 0, "progress": False}}
    save_config(load_config(None, over, {"mae": {"mask_ratio": 0.5}, "optim": {"blr": 1e-3}}), run / "config.yaml")
    with pytest.raises(ByonError, match=r"was trained with another config \(differs in mae.mask_ratio, "
                                        r"optim.blr\); pass --tag"):
        bench_quality("smoke", ["mae"], [0], tmp_path / "runs", tmp_path / "results")
    assert not (tmp_path / "results").exists()
    # keys that change no result may differ; the record then holds the run's own values
    save_config(load_config(None, over, {"train": {"num_threads": 3, "log_every_n_steps": 1}}), run / "config.yaml")
    cfg = load_config(None, over, {"train": {"num_threads": 1}})
    assert quality._run_config(run, cfg)["train"]["num_threads"] == 3


def test_a_finished_run_of_the_default_devices_is_reused(tmp_path):
    """`train.devices: auto` (the default) is written to config.yaml as resolved; the same config still matches."""
    over = {"method": "mae", "data": {"dataset": "synthetic", "subset": 32}, "model": {"preset": "vit-test"},
            "train": {"epochs": 1, "batch_size": 16, "seed": 0, "progress": False}}
    cfg = load_config(None, over, sets=["train.num_threads=1"])
    assert cfg.train.devices == "auto"
    train(cfg, tmp_path / "run")
    assert quality._run_config(tmp_path / "run", cfg)["train"]["devices"] == 1


def test_sweep_tabulates_one_row_per_config(tmp_path):
    configs = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    configs[0].write_text("method: mae\nmae: {mask_ratio: 0.5}\n")
    configs[1].write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    extra = ["train.max_steps=2", "train.num_threads=1"]  # --set extras name the rows too
    table = bench_sweep("smoke", configs, [0], tmp_path / "runs", tmp_path / "results", extra=extra)
    lines = table.splitlines()
    names = [run_name(f"{tmp_path.name}-{c}", extra) for c in "ab"]
    assert names[0] != f"{tmp_path.name}-a" and names[0] == run_name(f"{tmp_path.name}-a", extra[:1])
    assert len(lines) == 4 and lines[2].startswith(f"| {names[0]} |")
    rec = json.loads((tmp_path / "results" / "smoke" / f"{names[1]}-seed0.json").read_text())
    assert rec["config"]["mae"]["mask_ratio"] == 0.75 and rec["steps"] == 2 and rec["overrides"] == extra


def test_rows_of_one_config_are_trained_once(tmp_path):
    # two table rows that resolve to the same experiment (as Table 1's full row and BYON's default) and a third
    # that differs: the second copies the first's record, the third trains
    configs = [tmp_path / "full.yaml", tmp_path / "same.yaml", tmp_path / "other.yaml"]
    configs[0].write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    configs[1].write_text("method: mae\n")  # 0.75 is MAE's default
    configs[2].write_text("method: mae\nmae: {mask_ratio: 0.5}\n")
    runs, results = tmp_path / "runs", tmp_path / "results"
    bench_sweep("smoke", configs, [0], runs, results, extra=["train.max_steps=2"])
    recs = {f.name: json.loads(f.read_text()) for f in (results / "smoke").glob("*.json")}
    same = next(r for n, r in recs.items() if n.startswith(f"{tmp_path.name}-same"))
    full = next(n for n in recs if n.startswith(f"{tmp_path.name}-full"))
    other = next(r for n, r in recs.items() if n.startswith(f"{tmp_path.name}-other"))
    assert same["same_run_as"] == full and same["metrics"] == recs[full]["metrics"]
    assert same["name"].startswith(f"{tmp_path.name}-same") and "same_run_as" not in other
    trained = sorted(d.name for d in (runs / "smoke").iterdir())
    assert len(trained) == 2 and not any(f"{tmp_path.name}-same" in d for d in trained)  # two trainings
    # sweep rows (copies too) are marked, and RESULTS.md leaves them to their own tables
    assert all(r["sweep"] is True for r in recs.values())
    from byon.bench.report import load_results

    assert load_results(results) == {}


def test_report_renders_tables_from_the_jsons(tmp_path):
    from byon.bench.report import render

    results = tmp_path / "results" / "p"
    results.mkdir(parents=True)
    for seed, knn in ((0, 80.0), (1, 82.0)):
        rec = {"name": "mae", "seed": seed, "wall_time_s": 60.0, "images_per_s": 100.0, "flops_per_image": 2e8,
               "hardware": "cpu", "torch": "x", "commit": "abc",
               "metrics": {"knn": knn, "linear": 85.0, "lowshot10": 50.0, "lowshot100": 70.0}}
        (results / f"mae-seed{seed}.json").write_text(json.dumps(rec))
    # an encoder without a CLS token: its *_cls metrics are None (or absent in a hand-made record)
    rec = {"name": "ijepa", "seed": 0, "wall_time_s": 60.0, "images_per_s": 100.0, "flops_per_image": 2e8,
           "metrics": {"knn": 70.0, "linear": 75.0, "knn_cls": None, "knn_mean": 70.0, "linear_mean": 75.0}}
    (results / "ijepa-seed0.json").write_text(json.dumps(rec))
    out = render(tmp_path / "results", tmp_path / "RESULTS.md")
    text = out.read_text()
    assert "| mae | 0,1 | 81.00 ± 1.41 | 85.00 ± 0.00 |" in text
    assert "| ijepa | 0 | 70.00 | 75.00 | — | — | — | — | 70.00 | — | 75.00 |" in text
    assert (tmp_path / "p-accuracy-vs-time.png").stat().st_size > 1000
    # an earlier protocol version renders after the current one, labelled; the tuned settings precede v2's table
    (tmp_path / "results" / "p-v1").mkdir()
    (tmp_path / "results" / "p-v1" / "mae-seed0.json").write_text((results / "mae-seed0.json").read_text())
    (tmp_path / "results" / "tune" / "p").mkdir(parents=True)
    (tmp_path / "results" / "tune" / "p" / "mae-winner.json").write_text(json.dumps(
        {"method": "mae", "sets": ["data.val_size=10", "optim.blr=1e-3"], "val": {"linear": 90.0, "knn": 89.0},
         "screen_epochs": 2, "epochs": 8}))
    # the feature the val scores read, and the other feature's beside it
    (tmp_path / "results" / "tune" / "p" / "byon-winner.json").write_text(json.dumps(
        {"method": "byon", "sets": ["optim.blr=2e-3"], "screen_epochs": 2, "epochs": 8,
         "val": {"linear": 80.0, "knn": 79.0, "default_feature": "cls", "linear_cls": 80.0, "knn_cls": 79.0,
                 "linear_mean": 81.5, "knn_mean": 80.25}}))
    text = render(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    v2, v1 = text.index("## p: protocol v2"), text.index("## p-v1: protocol v1, untuned")
    assert v2 < text.index("| mae | `optim.blr=1e-3` | 90.00 | 89.00 | — | 2 / 8 | `mae.md` |") < v1
    assert "| byon | `optim.blr=2e-3` | 80.00 | 79.00 | cls (mean: 81.50 / 80.25) | 2 / 8 | `byon.md` |" in text
    # the test records read the mean feature (the default moved after the winner was recorded): val shows it too
    (results / "byon-seed0.json").write_text(json.dumps(
        {"name": "byon", "method": "byon", "seed": 0, "wall_time_s": 60.0, "images_per_s": 100.0,
         "flops_per_image": 2e8, "metrics": {"knn": 1.0, "linear": 2.0, "default_feature": "mean"}}))
    text = render(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    assert "| byon | `optim.blr=2e-3` | 81.50 | 80.25 | mean (cls: 80.00 / 79.00) | 2 / 8 | `byon.md` |" in text


def test_train_time_of_a_resumed_run_comes_from_the_rates_logged_over_the_whole_run(tmp_path):
    from byon.bench.quality import _train_time

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text("epoch,step,train/images_per_s,train/loss\n"
                                                   "0,9,100.0,1.0\n0,10,,0.9\n1,19,50.0,0.8\n")
    single = {"wall_time_s": 12.0, "images_per_s": 99.0, "segments": 1, "steps": 20, "global_batch": 10}
    assert _train_time(tmp_path, single) == {"wall_time_s": 12.0, "images_per_s": 99.0}
    resumed = single | {"segments": 2, "wall_time_s": 30.0}
    assert _train_time(tmp_path, resumed) == {"wall_time_s": 30.0, "images_per_s": 75.0, "segments": 2}
    old = resumed | {"wall_time_s": None}
    out = _train_time(tmp_path, old)
    assert out["wall_time_s"] == round(20 * 10 / 75.0, 2) and "wall_time_estimated" in out


def test_quality_applies_the_method_recipe_from_the_recipes_folder(tmp_path, smoke):
    recipes = tmp_path / "configs"
    (recipes / "byon").mkdir(parents=True)
    (recipes / "mae.yaml").write_text("method: mae\nmae: {mask_ratio: 0.5}\noptim: {blr: 1.0e-3}\n")
    (recipes / "byon" / "default.yaml").write_text("method: byon\nbyon: {mask_ratio: 0.5}\n")
    assert quality.recipe_file(recipes, "mae") == recipes / "mae.yaml"
    assert quality.recipe_file(recipes, "byon") == recipes / "byon" / "default.yaml"
    assert quality.recipe_file(recipes, "simmim") is None and quality.recipe_file(None, "mae") is None
    [path] = bench_quality("smoke", ["mae"], [0], tmp_path / "runs", tmp_path / "results",
                           extra=["train.max_steps=2"], recipes=recipes)
    rec = json.loads(path.read_text())
    # the recipe applies under the protocol: its own settings, the protocol's data/encoder/epochs
    assert rec["config"]["mae"]["mask_ratio"] == 0.5 and rec["config"]["optim"]["blr"] == 1e-3
    assert rec["config"]["data"]["dataset"] == "synthetic" and rec["config"]["model"]["preset"] == "vit-test"


def test_a_run_a_signal_stopped_is_resumed_not_evaluated_as_finished(tmp_path, smoke, monkeypatch):
    run = tmp_path / "runs" / "smoke" / "mae-seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"interrupted": "SIGTERM", "steps": 1}))
    resumed = []

    def train(cfg, out, resume=None):
        resumed.append(resume)
        raise ByonError("stop here")

    monkeypatch.setattr(quality, "train", train)
    with pytest.raises(ByonError, match="stop here"):
        bench_quality("smoke", ["mae"], [0], tmp_path / "runs", tmp_path / "results")
    assert resumed == ["auto"]


def test_a_finished_run_is_evaluated_with_the_threads_the_command_gives_it(tmp_path, smoke, monkeypatch):
    runs, results = tmp_path / "runs", tmp_path / "results"
    run = runs / "smoke" / "mae-seed0"
    cfg = load_config(None, smoke.overrides(None, seed=0, progress=False) | {"method": "mae"})
    train(cfg, run)
    seen = []
    monkeypatch.setattr(quality, "_frozen_metrics", lambda *a, **k: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = json.loads(bench_quality("smoke", ["mae"], [0], runs, results, extra=["train.num_threads=1"])[0]
                         .read_text())
        # a fresh process evaluating a finished run would otherwise take every core beside the queue's other jobs
        assert seen == [1] and rec["eval_env"]["hardware"].endswith(" 1 threads")
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(before)


def nested(flat: dict) -> dict:
    """A record's nested config from its flat `section.key` form."""
    out: dict = {}
    for key, v in flat.items():
        *head, last = key.split(".")
        d = out
        for h in head:
            d = d.setdefault(h, {})
        d[last] = v
    return out


def test_a_record_from_before_a_new_setting_still_twins_at_that_settings_default(tmp_path):
    from byon.bench.quality import _resolved, twin_record

    cfg = load_config(None, {"method": "mae", "data": {"dataset": "synthetic"}})
    old = {k: v for k, v in json.loads(json.dumps(_resolved(cfg))).items() if k != "data.storage"}  # predates it
    rec = {"name": "mae", "seed": 0, "config": nested(old), "metrics": {"split": "test", "lowshot10": 1.0}}
    (tmp_path / "mae-seed0.json").write_text(json.dumps(rec))
    assert twin_record(tmp_path, 0, cfg) == tmp_path / "mae-seed0.json"  # the setting's default: the same run
    streamed = load_config(None, {"method": "mae", "data": {"dataset": "synthetic", "storage": "stream"}})
    assert twin_record(tmp_path, 0, streamed) is None  # another value of the new setting: another experiment
    assert twin_record(tmp_path, 1, cfg) is None and twin_record(tmp_path, 0, cfg, split="val") is None


def test_a_copy_reads_the_feature_the_method_reads_out_now(tmp_path):
    from byon.bench.quality import _resolved, read_as, twin_record
    from byon.methods import METHODS

    cfg = load_config(None, {"method": "byon", "data": {"dataset": "synthetic"}, "byon": {"encoder_tokens": "visible"}})
    assert METHODS["byon"].feature_of(cfg.method_cfg) == "mean"
    assert METHODS["mae"].feature_of(load_config(None, {"method": "mae"}).method_cfg) == "mean"
    # scored when BYON's default read CLS: both features' scores are in it, its copy reads the mean ones
    m = {"split": "val", "default_feature": "cls", "knn": 1.0, "linear": 2.0, "knn_cls": 1.0, "linear_cls": 2.0,
         "knn_mean": 3.0, "linear_mean": 4.0}
    assert read_as(m, "mean") == m | {"default_feature": "mean", "knn": 3.0, "linear": 4.0}
    assert read_as(m, "cls") is m
    low = m | {"lowshot10": 5.0, "lowshot10_cls": 5.0, "lowshot10_mean": 6.0, "lowshot10_mean_std": 0.1}
    assert read_as(low, "mean")["lowshot10"] == 6.0 and read_as(low, "mean")["lowshot10_mean_std"] == 0.1
    with pytest.raises(ByonError, match="cannot be re-read"):
        read_as(m | {"finetune": 80.0}, "mean")
    # a test record fine-tuned through the other feature is no twin: a fresh run would fine-tune another way
    rec = {"name": "byon", "seed": 0, "config": nested(json.loads(json.dumps(_resolved(cfg)))),
           "metrics": m | {"split": "test", "lowshot10": 1.0}}
    (tmp_path / "byon-seed0.json").write_text(json.dumps(rec))
    assert twin_record(tmp_path, 0, cfg) == tmp_path / "byon-seed0.json"
    rec["metrics"]["finetune"] = 80.0
    (tmp_path / "byon-seed0.json").write_text(json.dumps(rec))
    assert twin_record(tmp_path, 0, cfg) is None


def test_a_record_whose_recipe_moved_is_an_error_or_rerun_and_kept_aside(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_frozen_metrics", lambda *a, **k: {"knn": 1.0})
    runs, results, recipes = tmp_path / "runs", tmp_path / "results", tmp_path / "configs"
    recipes.mkdir()
    (recipes / "mae.yaml").write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    go = dict(extra=["train.max_steps=2"], recipes=recipes)
    [out] = bench_quality("smoke", ["mae"], [0], runs, results, **go)
    assert json.loads(out.read_text())["recipe"] == str(recipes / "mae.yaml")
    assert bench_quality("smoke", ["mae"], [0], runs, results, **go) == [out]  # the same recipe: reused as it is
    (recipes / "mae.yaml").write_text("method: mae\nmae: {mask_ratio: 0.5}\n")  # the val-tuned recipe moves
    with pytest.raises(ByonError, match=r"mae\.mask_ratio: 0\.75 -> 0\.5\).*--rerun-changed"):
        bench_quality("smoke", ["mae"], [0], runs, results, **go)
    [new] = bench_quality("smoke", ["mae"], [0], runs, results, rerun_changed=True, **go)
    assert new == out and json.loads(new.read_text())["config"]["mae"]["mask_ratio"] == 0.5
    [old] = (results / "smoke" / "superseded").glob(f"*/{out.name}")  # kept, with its run, out of every table
    assert json.loads(old.read_text())["config"]["mae"]["mask_ratio"] == 0.75
    assert [p.name for p in (runs / "smoke" / "superseded").glob("*/*")] == [out.stem]
    # a run without its record (stopped before the evaluation) is moved aside the same way
    new.unlink()
    (recipes / "mae.yaml").write_text("method: mae\nmae: {mask_ratio: 0.6}\n")
    with pytest.raises(ByonError, match="trained with another config"):
        bench_quality("smoke", ["mae"], [0], runs, results, **go)
    [again] = bench_quality("smoke", ["mae"], [0], runs, results, rerun_changed=True, **go)
    assert json.loads(again.read_text())["config"]["mae"]["mask_ratio"] == 0.6
    assert len(list((runs / "smoke" / "superseded").glob("*/*"))) == 2  # both earlier runs kept


def test_a_row_whose_recipe_moved_is_marked_in_the_reports(tmp_path):
    from byon.bench.quality import _resolved, record_config, row_mark
    from byon.bench.report import protocol_table

    recipe = tmp_path / "mae.yaml"
    recipe.write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    cfg = record_config("mae", 0, "smoke", config=recipe)
    rec = {"name": "mae", "method": "mae", "protocol": "smoke", "seed": 0, "overrides": [], "recipe": str(recipe),
           "config": nested(json.loads(json.dumps(_resolved(cfg)))), "metrics": {"knn": 80.0},
           "wall_time_s": 60.0, "images_per_s": 100.0, "flops_per_image": 2e8}
    assert row_mark([rec]) == ([rec], "", "") and "‡" not in "\n".join(protocol_table([rec]))
    recipe.write_text("method: mae\nmae: {mask_ratio: 0.6}\n")  # the recipe moved after the record was made
    assert row_mark([rec]) == ([rec], "‡", f"`{recipe}` now differs in mae.mask_ratio: 0.75 -> 0.6")
    text = "\n".join(protocol_table([rec]))
    assert "| mae ‡ | 0 |" in text and "mae.mask_ratio: 0.75 -> 0.6" in text and "--rerun-changed" in text
    assert row_mark([rec | {"recipe": None}])[1:] == ("", "")  # a built-in recipe's record names no file
    # a re-run under way: seed 1 trained with the recipe as it is now, seed 0 not yet; the note names seed 0
    fresh = rec | {"seed": 1, "config": nested(json.loads(json.dumps(_resolved(record_config("mae", 1, "smoke",
                                                                                                config=recipe)))))}
    assert row_mark([fresh]) == ([fresh], "", "")  # all stale (above): all kept, and marked ‡
    assert row_mark([rec, fresh]) == ([fresh], "§", "seed 0 (mae.mask_ratio: 0.75 -> 0.6)")  # never mixed
    text = "\n".join(protocol_table([rec, fresh]))
    assert "| mae § | 1 |" in text and "‡" not in text
    assert "§ seeds left out" in text and "mae: seed 0 (mae.mask_ratio" in text


def test_the_tuned_table_shows_the_search_step_whose_choice_the_recipe_holds(tmp_path):
    from byon.bench.report import recipe_winners

    tune, recipes = tmp_path / "tune", tmp_path / "configs"
    tune.mkdir()
    recipes.mkdir()
    step = {"method": "mae", "protocol": "smoke", "screen_epochs": 2, "epochs": 3, "val": {"linear": 1.0, "knn": 1.0}}
    base = ["data.val_size=10", "optim.blr=1e-3"]
    (tune / "mae-winner.json").write_text(json.dumps(step | {"sets": base}))  # the lr grid
    (tune / "mae-knobs-winner.json").write_text(json.dumps(step | {"sets": [*base, "mae.mask_ratio=0.6"]}))
    (tune / "mae-optim-winner.json").write_text(json.dumps(step | {"sets": [*base, "optim.weight_decay=0.15"]}))
    (recipes / "mae.yaml").write_text("method: mae\noptim: {blr: 1.0e-3}\n")
    assert [stem for stem, _ in recipe_winners(tune, recipes)] == ["mae"]  # the knob steps kept the lr grid's choice
    (recipes / "mae.yaml").write_text("method: mae\noptim: {blr: 1.0e-3, weight_decay: 0.15}\n")
    assert [stem for stem, _ in recipe_winners(tune, recipes)] == ["mae-optim"]  # the optimiser step moved it
    (recipes / "mae.yaml").write_text("method: mae\noptim: {blr: 5.0e-4}\n")  # hand-set: the method's own grid
    assert [stem for stem, _ in recipe_winners(tune, recipes)] == ["mae"]
