"""`byon eval probe-grid` and `byon sample` on a tiny synthetic DDAE run."""

import json

import pytest
import torch

from byon.cli import main
from byon.errors import ByonError
from byon.eval.probe_grid import parse_layers, parse_timesteps

TINY = ["--dataset", "synthetic", "--subset", "64", "--model", "vit-test", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def ddae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddae") / "run"
    assert main(["pretrain", "--method", "ddae", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    return run


def test_probe_grid_returns_the_full_grid_and_names_the_best(ddae_run, capsys):
    capsys.readouterr()
    assert main(["eval", "probe-grid", "--run", str(ddae_run), "--timesteps", "1,50", "--subset", "100",
                 "--linear-epochs", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "best block" in lines[0]
    res = json.loads(lines[-1])
    assert res["layers"] == [1, 2, 3, 4] and res["timesteps"] == [1, 50]
    assert len(res["top1"]) == 4 and all(len(row) == 2 for row in res["top1"])
    assert all(0 <= v <= 100 for row in res["top1"] for v in row)
    b = res["best"]
    assert b["top1"] == max(v for row in res["top1"] for v in row)
    assert res["top1"][res["layers"].index(b["layer"])][res["timesteps"].index(b["t"])] == b["top1"]
    for ext in ("json", "png"):
        assert (ddae_run / "eval" / f"probe-grid-synthetic.{ext}").is_file()


def test_probe_grid_bad_input(ddae_run, capsys, monkeypatch):
    capsys.readouterr()
    assert main(["eval", "probe-grid", "--run", str(ddae_run), "--timesteps", "1000", "--layers", "1"]) == 2
    assert "0…999" in capsys.readouterr().err
    assert main(["eval", "probe-grid", "--run", str(ddae_run), "--layers", "9"]) == 2
    assert "blocks 1…4" in capsys.readouterr().err
    import byon.rundir as run_mod

    cfg, _ = run_mod.load_run(ddae_run)
    monkeypatch.setattr(run_mod, "load_run", lambda run, **kw: (cfg, torch.nn.Identity()))  # a method without the hook
    assert main(["eval", "probe-grid", "--run", str(ddae_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'layer_features' hook" in err and "ddae" in err and len(err.splitlines()) == 1
    assert main(["sample", "--run", str(ddae_run), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'sample' hook (needed for sampling images); use a run of ddae" in err and len(err.splitlines()) == 1


def test_parsers():
    assert parse_layers("all", 3) == [1, 2, 3] and parse_layers("3,1", 3) == [1, 3]
    assert parse_timesteps(None) == [1, 10, 25, 50, 100, 200] and parse_timesteps("50,1,50") == [1, 50]
    with pytest.raises(ByonError):
        parse_layers("x", 3)
    with pytest.raises(ByonError):
        parse_timesteps("-1")


def test_sample_writes_a_deterministic_grid(ddae_run, tmp_path, capsys):
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        assert main(["sample", "--run", str(ddae_run), "--n", "4", "--steps", "3", "--seed", "7",
                     "--out", str(out)]) == 0
    assert a.read_bytes() == b.read_bytes()
    img = Image.open(a)
    assert img.size == (2 * 28 + 3, 2 * 28 + 3)  # 2 × 2 grid, padding 1
    assert main(["sample", "--run", str(ddae_run), "--n", "2", "--steps", "2", "--sampler", "heun"]) == 2
    assert "EDM-trained" in capsys.readouterr().err
    assert main(["sample", "--run", str(ddae_run), "--n", "2", "--steps", "2"]) == 0
    assert (ddae_run / "samples" / "ddim-2steps-seed0.png").is_file()
