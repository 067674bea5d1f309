import json

from byon.bench.quality import bench_quality, bench_sweep


def test_quality_writes_one_json_per_run_and_skips_finished_runs(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    paths = bench_quality("smoke", ["mae", "random-init", "pixels"], [0], runs, results)
    assert [p.name for p in paths] == ["mae-seed0.json", "random-init-seed0.json", "pixels.json"]
    rec = json.loads(paths[0].read_text())
    m = rec["metrics"]
    for k in ("knn_cls", "knn_mean", "linear_cls", "linear_mean", "lowshot5_cls", "lowshot5_mean"):
        assert 0.0 <= m[k] <= 100.0, k
    assert rec["flops_per_image"] > 0 and rec["seed"] == 0 and rec["config"]["method"] == "mae"
    assert json.loads(paths[1].read_text())["steps"] == 0
    pix = json.loads(paths[2].read_text())["metrics"]
    assert pix["knn_raw"] > 30.0  # 10 synthetic shape classes: raw pixels are far above chance
    mtime = paths[0].stat().st_mtime_ns
    assert bench_quality("smoke", ["mae"], [0], runs, results)[0].stat().st_mtime_ns == mtime


def test_sweep_tabulates_one_row_per_config(tmp_path):
    configs = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    configs[0].write_text("method: mae\nmae: {mask_ratio: 0.5}\n")
    configs[1].write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    table = bench_sweep("smoke", configs, [0], tmp_path / "runs", tmp_path / "results")
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith(f"| {tmp_path.name}-a |")
    rec = json.loads((tmp_path / "results" / "smoke" / f"{tmp_path.name}-b-seed0.json").read_text())
    assert rec["config"]["mae"]["mask_ratio"] == 0.75


def test_report_renders_tables_from_the_jsons(tmp_path):
    from byon.bench.report import render

    results = tmp_path / "results" / "p"
    results.mkdir(parents=True)
    for seed, knn in ((0, 80.0), (1, 82.0)):
        rec = {"name": "mae", "seed": seed, "wall_time_s": 60.0, "images_per_s": 100.0, "flops_per_image": 2e8,
               "hardware": "cpu", "torch": "x", "commit": "abc",
               "metrics": {"knn": knn, "linear": 85.0, "lowshot10": 50.0, "lowshot100": 70.0}}
        (results / f"mae-seed{seed}.json").write_text(json.dumps(rec))
    out = render(tmp_path / "results", tmp_path / "RESULTS.md")
    text = out.read_text()
    assert "| mae | 0,1 | 81.00 ± 1.41 | 85.00 ± 0.00 |" in text
    assert (tmp_path / "p-accuracy-vs-time.png").stat().st_size > 1000


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
