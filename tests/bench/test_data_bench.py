"""`byon bench data` on a tiny generated folder: the record, its Markdown, and the workers estimate."""

from __future__ import annotations

import json

from byon.cli import main


def test_bench_data_writes_rates_and_a_record(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["bench", "data", "--generate", "40", "--sizes", "40", "60", "--image-size", "32", "--workers", "0,1",
                 "--batch", "8", "--no-flops", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(row["source"], row["workers"], row["images"]) for row in r["rows"]] == [
        ("folder", 0, 40), ("folder", 1, 40), ("shards", 0, 40), ("shards", 1, 40)]
    assert all(row["images_per_s"] > 0 for row in r["rows"]) and r["peak_rss_mb"] > 0
    assert r["command"].startswith("byon bench data --generate 40 --sizes 40 60")
    md = out.with_suffix(".md").read_text()
    assert r["command"] in md and "| shards | 1 |" in md
    assert "1 worker(s)" in capsys.readouterr().out
