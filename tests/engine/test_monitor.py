"""Online monitoring: the collapse statistic, mode/RNG hygiene, and a monitored run that trains (and resumes)
exactly like an unmonitored one."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from byon.data import DataInfo
from byon.data.synthetic import write_jpeg_folder
from byon.engine.monitor import OnlineMonitor, feature_std
from byon.engine.run import train
from byon.errors import ByonError
from byon.methods import build_method, load_config

# 16 images / batch 16 = 1 step per epoch
TINY = {"data": {"dataset": "synthetic", "subset": 16}, "model": {"preset": "vit-test"},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "log_every_n_steps": 1}}
MONITOR = {"monitor_every_epochs": 1, "monitor_subset": 40}


def config(method: str = "byon", **train: object):
    return load_config(None, {"method": method, **TINY, "train": TINY["train"] | train})


def rows(run: Path, key: str) -> list[tuple[int, float]]:
    with open(run / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_feature_std_is_one_without_collapse_and_zero_with_it() -> None:
    # two orthogonal rows: per-dimension std (unbiased) sqrt(1/2), times sqrt(2) = exactly 1
    assert feature_std(torch.tensor([[3.0, 0.0], [0.0, 0.5]])) == pytest.approx(1.0)
    iso = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    assert feature_std(iso) == pytest.approx(1.0, abs=0.03)
    scales = torch.rand(100, 1, generator=torch.Generator().manual_seed(1)) + 0.5
    assert feature_std(iso[:1] * scales) == pytest.approx(0.0, abs=1e-6)  # one direction, any length
    # dimensional collapse onto 1 of 16 dimensions (random sign): std 1 in that one, 0 elsewhere → 1/16·sqrt(16)
    line = torch.zeros(4000, 16)
    line[:, 0] = iso[:, 0]
    assert feature_std(line) == pytest.approx(math.sqrt(16) / 16, abs=0.01)
    with pytest.raises(ByonError):
        feature_std(torch.ones(1, 4))


def test_measure_restores_every_modules_mode_and_draws_no_rng() -> None:
    cfg = config(**MONITOR)
    mon = OnlineMonitor(cfg, _info(), every=1, subset=60)
    assert len(mon.data["train"]) == len(mon.data["test"]) == 60
    assert torch.bincount(mon.data["test"].labels).tolist() == [6] * 10  # stratified
    method, _ = build_method(cfg, _info())
    method.train()
    modes = [m.training for m in method.modules()]
    assert not method.target_encoder.training  # BYON's .train() keeps the EMA teacher in eval mode
    rng = torch.get_rng_state()
    out = mon.measure(method, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in method.modules()] == modes
    assert out.keys() == {"monitor/knn_top1", "monitor/feature_std"} and 0 <= out["monitor/knn_top1"] <= 100
    assert mon.measure(method, torch.device("cpu")) == out


def test_a_streamed_run_decodes_only_the_monitor_subsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for split, seed in (("train", 0), ("test", 1)):
        write_jpeg_folder(tmp_path / split, 30, classes=3, seed=seed)
    cfg = load_config(None, {"method": "mae", "data": {"dataset": "imagefolder", "root": str(tmp_path)},
                             "model": {"preset": "vit-test"}, "train": MONITOR})

    def whole_split(*args, **kwargs):
        raise AssertionError("a streamed run's monitor decoded a whole split")

    monkeypatch.setattr("byon.engine.monitor.load_dataset", whole_split)
    info = DataInfo("imagefolder", 16, 3, 3, (0.5,) * 3, (0.25,) * 3)
    mon = OnlineMonitor(cfg, info, every=1, subset=12, streamed=True)
    assert mon.data["train"].images.shape == mon.data["test"].images.shape == (12, 3, 16, 16)
    assert torch.bincount(mon.data["test"].labels).tolist() == [4, 4, 4]  # stratified, as in memory


def _info():
    from byon.data import channel_stats, data_info, load_dataset

    data = load_dataset("synthetic", "train", subset=16)
    return data_info(data, *channel_stats(data.images))


def test_a_monitored_run_trains_and_resumes_exactly_like_an_unmonitored_one(tmp_path: Path) -> None:
    plain = train(config(), tmp_path / "plain")
    watched = train(config(**MONITOR), tmp_path / "watched")
    assert rows(watched, "train/loss") == rows(plain, "train/loss")
    a = torch.load(plain / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(watched / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # EMA teacher and timestep histogram included
    knn = rows(watched, "monitor/knn_top1")
    assert [s for s, _ in knn] == [0, 1] and [s for s, _ in rows(watched, "monitor/feature_std")] == [0, 1]
    # stopped after epoch 0, resumed: epoch 0's row (logged before its checkpoint) is kept, epoch 1's added
    resumed = tmp_path / "resumed"
    train(config(max_steps=1, **MONITOR), resumed)
    train(config(**MONITOR), resumed, resume="auto")
    assert rows(resumed, "train/loss") == rows(plain, "train/loss")
    assert rows(resumed, "monitor/knn_top1") == knn


def test_monitor_settings_are_checked() -> None:
    with pytest.raises(ByonError, match="monitor_subset"):
        config(monitor_every_epochs=1, monitor_subset=1)
    with pytest.raises(ByonError, match="monitor_every_epochs"):
        config(monitor_every_epochs=-1)
