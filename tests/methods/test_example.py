"""docs/architecture.md's example method, as printed there: registered with one line, it trains for a step."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

from byon.engine.run import train
from byon.methods import METHODS, build_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def example_module(monkeypatch) -> types.ModuleType:
    code = re.search(r"The whole of one.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.splitlines()) <= 45, "the example method stays about 40 lines"
    module = types.ModuleType("byon_example_method")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclass type hints resolve through it
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    return module


def test_the_documented_example_method_trains_a_step(tmp_path, monkeypatch, tiny_overrides):
    ex = example_module(monkeypatch)
    monkeypatch.setitem(METHODS, "denoise", ex.Denoise)  # the one registry line
    over = tiny_overrides | {"method": "denoise", "denoise": {"sigma": 0.3}}
    over["train"] = over["train"] | {"max_steps": 1}
    cfg = build_config(over)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.method_cfg.sigma == 0.3  # its recipe and its section
    run = train(cfg, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1 and {"train/loss", "train/pred_std"} <= set(summary["last_logs"])
