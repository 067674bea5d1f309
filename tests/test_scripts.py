"""The benchmark scripts under scripts/bench/ still import and parse their arguments (they have no other tests)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts" / "bench").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_a_bench_script_answers_help(script: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage:" in res.stdout


@pytest.mark.parametrize("script", sorted((ROOT / "scripts" / "bench").glob("*.sh")), ids=lambda p: p.name)
def test_a_bench_shell_script_parses(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
