"""Run-level frozen evaluations: the feature cache with last-block features, the linear grid, low-shot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from byon.cli import main
from byon.errors import ByonError
from byon.eval.frozen import evaluate, evaluate_linear_grid, evaluate_lowshot, lowshot_indices, run_features


def last_json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_last_block_features_get_their_own_cache_beside_the_base_one(gray_run: Path) -> None:
    def cache() -> dict[str, int]:  # this test's files only (other tests share the run)
        return {p.name: p.stat().st_mtime_ns for p in (gray_run / "features").glob("synthetic-train-100-*")}

    base, labels = run_features(gray_run, "synthetic", "train", subset=100)
    files = cache()
    assert base.keys() == {"cls", "mean"} and len(files) == 1 and labels.shape == (100,)
    feats, _ = run_features(gray_run, "synthetic", "train", subset=100, blocks=4)  # vit-test has 2 blocks
    assert feats.keys() == {"cls", "mean", "cls2"} and feats["cls2"].shape == (100, 64)
    torch.testing.assert_close(feats["cls2"][:, 32:], base["cls"])
    after = cache()
    assert len(after) == 2 and all(after[name] == t for name, t in files.items())  # the base cache was reused
    assert [n for n in after if n not in files][0].startswith("synthetic-train-100-cls2-")
    again, _ = run_features(gray_run, "synthetic", "train", subset=100, blocks=2)
    assert torch.equal(again["cls2"], feats["cls2"])
    assert cache() == after


def test_linear_grid_from_the_cli(gray_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "linear", "--run", str(gray_run), "--heads", "grid", "--lrs", "0.1,1", "--subset", "200",
                 "--linear-epochs", "2", "--json"]) == 0
    res = last_json(capsys)
    assert res["features"] == ["cls", "mean", "cls2", "cls2+mean"] and res["last_blocks"] == 2
    assert [(h["feature"], h["blr"]) for h in res["heads"]] == [(f, b) for f in res["features"] for b in (0.1, 1.0)]
    assert res["top1"] == res["best"]["top1"] and res["best"] in res["heads"] and res["split"] == "test"
    # chosen on a sixth of the 200 training images, not on test
    assert res["chosen_on"] == "33 held-out training rows" and len(res["choice"]) == len(res["heads"])
    path = gray_run / "eval" / "linear-grid-synthetic-blrs=0.1+1.0,epochs=2,subset=200.json"
    assert json.loads(path.read_text()) == res


def test_lowshot_from_the_cli(gray_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "lowshot", "--run", str(gray_run), "--shots", "2,5", "--draws", "3", "--epochs", "3",
                 "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert out[0].startswith("lowshot top-1 on synthetic (mean, 3 draws): 2-shot ")
    for n in ("2", "5"):
        for ft in ("cls", "mean"):
            accs = torch.tensor(res[n][ft]["draws"])
            assert len(accs) == 3
            assert res[n][ft]["mean"] == pytest.approx(float(accs.mean()))
            assert res[n][ft]["std"] == pytest.approx(float(accs.std()))
        assert res["top1"][n] == res[n][res["default_feature"]]["mean"]
    assert (gray_run / "eval" / "lowshot-synthetic-draws=3,epochs=3,shots=2+5.json").is_file()
    assert main(["eval", "lowshot", "--run", str(gray_run), "--shots", "2,x"]) == 2
    assert "--shots expects comma-separated integers" in capsys.readouterr().err


def test_lowshot_indices_take_n_per_class_and_repeat_for_a_seed() -> None:
    labels = torch.arange(60) % 3
    idx = lowshot_indices(labels, 4, seed=7)
    assert torch.bincount(labels[idx]).tolist() == [4, 4, 4] and len(set(idx.tolist())) == 12
    assert torch.equal(idx, lowshot_indices(labels, 4, seed=7))
    assert not torch.equal(idx, lowshot_indices(labels, 4, seed=8))
    with pytest.raises(ByonError, match="fewer than 21"):
        lowshot_indices(labels, 21, seed=0)


def test_an_encoder_without_a_cls_token_is_evaluated_on_its_mean_only(nocls_run: Path) -> None:
    """I-JEPA's encoder has no CLS token; its features' 'cls' is the mean again, so it must not be reported as
    a CLS result: every evaluation lists 'mean' only, and the benchmark record has None for the cls metrics."""
    import dataclasses

    from byon.bench.quality import PROTOCOLS, _frozen_metrics

    run = nocls_run
    feats, _ = run_features(run, "synthetic", "train", subset=100)
    assert feats.keys() == {"mean"}
    knn = evaluate("knn", run, "synthetic", subset=100)
    assert knn["features"] == ["mean"] and knn["default_feature"] == "mean" and "top1_cls" not in knn
    assert knn["top1"] == knn["top1_mean"]
    low = evaluate_lowshot(run, "synthetic", shots=(2,), draws=2, epochs=2)
    assert low["2"].keys() == {"mean"} and low["features"] == ["mean"]
    grid = evaluate_linear_grid(run, "synthetic", subset=100, blrs=(0.1,), blocks=2, epochs=1)
    assert grid["features"] == ["mean", "cls2", "cls2+mean"]
    p = dataclasses.replace(PROTOCOLS["smoke"], lowshot=(2,), lowshot_epochs=2, linear_epochs=1)
    m = _frozen_metrics(run, p, 0, None)
    assert m["knn_cls"] is m["linear_cls"] is m["lowshot2_cls"] is m["lowshot2_cls_std"] is None
    assert m["knn"] == m["knn_mean"] and m["lowshot2"] == m["lowshot2_mean"] and m["protocol"]["features"] == ["mean"]


@pytest.mark.parametrize("kind", ["knn", "lowshot", "grid", "cli"])
def test_an_evaluation_reads_the_checkpoint_once(gray_run: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    import byon.rundir as run_mod

    reads: list[str] = []
    real = run_mod.read_checkpoint
    monkeypatch.setattr(run_mod, "read_checkpoint",
                        lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    if kind == "knn":
        evaluate("knn", gray_run, "synthetic", subset=100)
    elif kind == "lowshot":
        evaluate_lowshot(gray_run, "synthetic", shots=(2,), draws=1, epochs=1)
    elif kind == "grid":
        evaluate_linear_grid(gray_run, "synthetic", subset=100, blrs=(0.1,), epochs=1)
    else:  # the dataset comes from the run, as the CLI finds it
        assert main(["eval", "linear", "--run", str(gray_run), "--subset", "100", "--linear-epochs", "1"]) == 0
    assert len(reads) == 1


def test_encoder_choice_evaluates_that_encoder_and_keeps_the_default_result(ema_run: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from byon.data import load_dataset
    from byon.eval.features import extract_features
    from byon.rundir import load_run

    assert main(["eval", "knn", "--run", str(ema_run), "--subset", "200", "--json"]) == 0
    default = last_json(capsys)
    assert main(["eval", "knn", "--run", str(ema_run), "--subset", "200", "--encoder", "ema", "--json"]) == 0
    ema = last_json(capsys)
    assert default["encoder"] == "default" and ema["encoder"] == "ema"
    assert json.loads((ema_run / "eval" / "knn-synthetic-subset=200.json").read_text()) == default  # kept
    assert json.loads((ema_run / "eval" / "knn-synthetic-ema-subset=200.json").read_text()) == ema

    _, method = load_run(ema_run)
    feats, _ = run_features(ema_run, "synthetic", "test", encoder="ema")
    data = load_dataset("synthetic", "test")
    info = method.info
    want = extract_features(method.target_encoder.features, data.images, info.mean, info.std)
    online = extract_features(method.encoder.features, data.images, info.mean, info.std)
    torch.testing.assert_close(feats["cls"], want["cls"])
    assert not torch.allclose(feats["cls"], online["cls"])  # 2 steps apart: another encoder
    base, _ = run_features(ema_run, "synthetic", "test")
    torch.testing.assert_close(base["cls"], online["cls"])  # BYON's default is the online encoder
    torch.testing.assert_close(run_features(ema_run, "synthetic", "test", encoder="online")[0]["cls"],
                               online["cls"])


def test_encoder_choice_on_a_method_with_one_encoder_is_a_one_line_error(gray_run: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "linear", "--run", str(gray_run), "--encoder", "online"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["byon: error: the 'MAE' method keeps no EMA (target) encoder beside its online one; drop "
                   "--encoder to use its eval encoder"]
    with pytest.raises(ByonError, match="unknown encoder 'student'; valid: ema, online"):
        evaluate("knn", gray_run, "synthetic", encoder="student")
    assert main(["eval", "finetune", "--run", str(gray_run), "--encoder", "ema"]) == 2
    assert "--encoder applies to the frozen evaluations" in capsys.readouterr().err


def test_readout_settings_at_evaluation_read_that_block_and_keep_the_default_result(
        ddae_run: Path, capsys: pytest.CaptureFixture) -> None:
    from byon.data import load_dataset
    from byon.eval.features import extract_features
    from byon.rundir import load_run

    assert main(["eval", "knn", "--run", str(ddae_run), "--subset", "100", "--json"]) == 0
    default = last_json(capsys)
    assert main(["eval", "knn", "--run", str(ddae_run), "--subset", "100", "--set", "ddae.feature_block=1",
                 "ddae.feature_noise=false", "--json"]) == 0
    chosen = last_json(capsys)
    assert default["readout"] == {} and chosen["readout"] == {"feature_block": 1, "feature_noise": False}
    assert json.loads((ddae_run / "eval" / "knn-synthetic-subset=100.json").read_text()) == default
    path = ddae_run / "eval" / "knn-synthetic-feature_block=1,feature_noise=False-subset=100.json"
    assert json.loads(path.read_text()) == chosen

    readout = {"feature_block": 1, "feature_noise": False}
    cfg, method = load_run(ddae_run, readout=readout)
    assert method.feature_block == 1 and cfg.method_cfg.feature_block == 1
    feats, _ = run_features(ddae_run, "synthetic", "test", readout=readout)
    base, _ = run_features(ddae_run, "synthetic", "test")

    def block1_clean(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = method.ema.block_outputs(*method.net_input(x, method._timesteps(10, len(x), x.device), None), upto=1)
        return {"mean": out[-1][:, 1:].mean(dim=1)}

    info = method.info
    want = extract_features(block1_clean, load_dataset("synthetic", "test").images, info.mean, info.std)
    torch.testing.assert_close(feats["mean"], want["mean"])
    assert not torch.allclose(feats["mean"], base["mean"])  # block 2 at t = 10, noised: another feature


def test_a_readout_block_in_the_decoder_half_is_evaluated(ddae_run: Path, capsys: pytest.CaptureFixture) -> None:
    readout = {"feature_block": 3}  # vit-test: 2 encoder + 2 decoder blocks
    assert main(["eval", "linear", "--run", str(ddae_run), "--subset", "100", "--set", "ddae.feature_block=3",
                 "--json"]) == 0
    assert last_json(capsys)["readout"] == readout
    feats, _ = run_features(ddae_run, "synthetic", "test", readout=readout)
    assert set(feats) == {"cls", "mean"} and feats["mean"].shape[1] == 32


def test_readout_settings_that_would_change_the_network_are_one_line_errors(
        ddae_run: Path, gray_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "knn", "--run", str(ddae_run), "--set", "ddae.decoder_depth=1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "byon: error: ddae.decoder_depth is not a read-out setting of 'ddae' (it would change the trained "
        "network); settable at evaluation: ddae.feature_block, ddae.feature_t, ddae.feature_noise"]
    assert main(["eval", "linear", "--run", str(ddae_run), "--set", "optim.blr=1"]) == 2
    assert "got section 'optim'" in capsys.readouterr().err
    assert main(["eval", "knn", "--run", str(gray_run), "--set", "mae.mask_ratio=0.5"]) == 2
    assert "settable at evaluation: none" in capsys.readouterr().err
    assert main(["eval", "knn", "--run", str(ddae_run), "--set", "ddae.feature_block=99"]) == 2
    assert "ddae.feature_block 99 does not exist" in capsys.readouterr().err


def test_results_under_other_settings_get_their_own_file(gray_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "knn", "--run", str(gray_run), "--json"]) == 0
    default = last_json(capsys)
    assert main(["eval", "knn", "--run", str(gray_run), "--k", "100", "--temperature", "0.1", "--json"]) == 0
    other = last_json(capsys)
    assert json.loads((gray_run / "eval" / "knn-synthetic.json").read_text()) == default  # the k=20 one stays
    assert json.loads((gray_run / "eval" / "knn-synthetic-k=100,temperature=0.1.json").read_text()) == other
    assert main(["eval", "knn", "--run", str(gray_run), "--k", "20", "--seed", "3"]) == 0  # k=20 is the default
    assert (gray_run / "eval" / "knn-synthetic-seed=3.json").is_file()
