import json

from byon.bench.reproduction import TABLE1, render_reproduction, verdict


def test_verdicts_need_the_papers_sign_beyond_two_standard_deviations():
    assert verdict([80.0, 80.2, 80.1], [79.0, 79.1, 78.9], +1.0) == ("confirmed", 80.1 - 79.0)
    assert verdict([79.0, 79.1, 78.9], [80.0, 80.2, 80.1], +1.0)[0] == "reversed"
    assert verdict([80.0, 81.0, 79.0], [79.8, 80.9, 79.1], +1.0)[0] == "not confirmed"
    assert verdict([80.0], [79.0], +1.0)[0] == "one seed: not judged"
    # std 1 in both rows, 3 seeds: a 1.8 difference is beyond 2 standard errors (1.63) but not 2 std (2.0)
    assert verdict([80.8, 81.8, 79.8], [79.0, 80.0, 78.0], +1.0) == ("not confirmed", 80.8 - 79.0)
    assert verdict([81.1, 82.1, 80.1], [79.0, 80.0, 78.0], +1.0)[0] == "confirmed"


def test_reproduction_renders_rows_beside_the_paper_and_judges_the_claims(tmp_path):
    folder = tmp_path / "results" / "p"
    folder.mkdir(parents=True)
    for seed in range(3):
        for tag, lin in (("ablation-full", 85.0 + 0.1 * seed), ("ablation-demask", 83.0 + 0.1 * seed),
                         ("mask_ratio-r050_ian", 84.0 + 0.1 * seed), ("mask_ratio-r050_noian", 84.5 + 0.1 * seed)):
            rec = {"name": tag, "seed": seed, "metrics": {"linear": lin, "knn": lin - 1, "lowshot10": 60.0}}
            (folder / f"{tag}-seed{seed}.json").write_text(json.dumps(rec))
    text = render_reproduction(tmp_path / "results", "p", tmp_path / "out.md").read_text()
    assert "Tables 1, 4 and 6 on **linear**" in text
    assert "| demask | 82.89 | 83.10 ± 0.10 | 82.10 ± 0.10 | 60.00 ± 0.00 | — | 0,1,2 |" in text
    assert "| full (all five) > demask | +0.67 | +2.00 | confirmed |" in text
    assert "| 50 %, w/ IAN > 50 %, w/o IAN | +0.79 | -0.50 | reversed |" in text
    assert "| full (all five) > contrastive | +3.29 | — | not run yet |" in text
    assert len([t for t, _, _ in TABLE1]) == 10 and "Not run yet" in text


def test_cost_section_renders_the_flops_record(tmp_path):
    from byon.bench.reproduction import cost_section

    assert "Not measured yet" in "\n".join(cost_section(tmp_path / "none.json"))
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"protocol": "p", "commit": "abcdef123", "command": "x", "rows": [
        {"method": "byon", "sets": ["byon.encoder_tokens=visible"], "gflops_per_image": 0.385, "over_diffmae": 1.81}]}))
    assert "| byon | `byon.encoder_tokens=visible` | 0.385 | 1.81 |" in cost_section(f)


def test_speed_rows_put_byon_beside_diffmae(tmp_path):
    from byon.bench.reproduction import speed_rows

    assert speed_rows(tmp_path) == []
    for name, ips, cfg in (("diffmae", 250.0, None), ("byon-default", 125.0, "configs/byon/default.yaml")):
        (tmp_path / f"{name}.json").write_text(json.dumps({"method": name.split("-")[0], "config_file": cfg, "speed": {
            "train_images_per_s": ips, "flops_per_image": 3.26e8}}))
    text = "\n".join(speed_rows(tmp_path))
    assert "| byon-default | `configs/byon/default.yaml` | 125 | 2.00 | 0.326 |" in text
    assert "| diffmae | built-in recipe | 250 | 1.00 | 0.326 |" in text


def test_the_val_screens_are_rendered_reading_first(tmp_path):
    tune = tmp_path / "results" / "tune" / "p"
    tune.mkdir(parents=True)
    (tune / "byon-lr.md").write_text("# Tuning byon-lr\n\nlr table\n")
    (tune / "byon-reading.md").write_text("# Tuning byon-reading\n\nreading table\n")
    (tune / "mae.md").write_text("# Tuning mae\n\nnot BYON's\n")
    text = render_reproduction(tmp_path / "results", "p", tmp_path / "out.md").read_text()
    assert text.index("### Tuning byon-reading") < text.index("### Tuning byon-lr")
    assert "reading table" in text and "not BYON's" not in text and "Not run yet: `byon bench tune" not in text


def test_table2_sets_byon_against_each_baseline_on_every_metric(tmp_path):
    folder = tmp_path / "results" / "p"
    folder.mkdir(parents=True)
    for seed in range(3):
        for name, knn, ft in (("byon", 83.0, 85.0), ("mae", 84.0, 84.9)):
            rec = {"name": name, "seed": seed, "metrics": {"knn": knn + 0.1 * seed, "linear": 85.0,
                                                           "lowshot10": 70.0, "finetune": ft + 0.1 * seed}}
            (folder / f"{name}-seed{seed}.json").write_text(json.dumps(rec))
    text = render_reproduction(tmp_path / "results", "p", tmp_path / "out.md").read_text()
    assert "| MAE | 82.78 ± 0.20 | 84.10 ± 0.10 | 85.00 ± 0.00 | 70.00 ± 0.00 | 85.00 ± 0.10 | 0,1,2 |" in text
    # kNN: BYON a point behind beyond 2 SE; linear level; fine-tune +0.1 within noise
    assert ("| BYON > MAE | +0.78 | -1.00, reversed | +0.00, not confirmed | +0.00, not confirmed | "
            "+0.10, not confirmed |") in text
    assert "| BYON > SimMIM | +1.02 | not run yet |" in text
    # the ablation tables' verdict metric is chosen over their own rows, not Table 2's
    assert "Tables 1, 4 and 6 on **linear**" in text


def test_ablation_rows_from_an_earlier_recipe_are_marked_and_never_averaged_with_current_ones(tmp_path):
    from byon.bench.quality import _resolved, record_config

    recipe = tmp_path / "full.yaml"
    recipe.write_text("method: mae\nmae: {mask_ratio: 0.75}\n")
    folder = tmp_path / "results" / "smoke"
    folder.mkdir(parents=True)

    def record(tag: str, seed: int, lin: float) -> None:
        cfg = _resolved(record_config("mae", seed, "smoke", config=recipe))
        rec = {"name": tag, "method": "mae", "protocol": "smoke", "seed": seed, "overrides": [],
               "recipe": str(recipe), "config": json.loads(json.dumps(cfg)), "metrics": {"linear": lin}}
        (folder / f"{tag}-seed{seed}.json").write_text(json.dumps(rec))

    for seed in range(3):
        record("ablation-full", seed, 80.0)
        record("ablation-demask", seed, 79.0)
    recipe.write_text("method: mae\nmae: {mask_ratio: 0.6}\n")  # the default moved; seed 0 of the full row re-run
    record("ablation-full", 0, 90.0)
    text = render_reproduction(tmp_path / "results", "smoke", tmp_path / "out.md").read_text()
    assert "| full (all five) § | 83.56 | 90.00 | — | — | — | 0 |" in text  # seeds 1, 2 left out, not averaged in
    assert "full (all five): seeds 1, 2 (mae.mask_ratio: 0.75 -> 0.6)" in text
    assert "| demask ‡ | 82.89 | 79.00 ± 0.00 |" in text
    assert "demask: `" in text and "now differs in mae.mask_ratio: 0.75 -> 0.6" in text
