from pathlib import Path

import pytest

from byon.config import parse_set
from byon.errors import ByonError
from byon.methods import METHODS, load_config


def test_defaults_recipe_yaml_and_set_resolve_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: mae\noptim: {blr: 2.0e-4}\nmae: {mask_ratio: 0.5}\n")
    cfg = load_config(f, parse_set(["optim.blr=3e-4", "train.epochs=2"]))
    assert cfg.method == "mae"
    assert cfg.optim.blr == 3e-4 and cfg.optim.betas == (0.9, 0.95)  # --set beats YAML; recipe betas
    assert cfg.method_cfg.mask_ratio == 0.5 and cfg.train.epochs == 2


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ByonError, match="unknown config key 'optim.bl'.*did you mean 'blr'"):
        load_config(None, {"method": "mae", "optim": {"bl": 1.0}})
    with pytest.raises(ByonError, match="unknown config section 'optm'.*did you mean 'optim'"):
        load_config(None, {"method": "mae", "optm": {}})
    with pytest.raises(ByonError, match="unknown method 'maee'.*did you mean 'mae'"):
        load_config(None, {"method": "maee"})


def test_bad_values_are_errors():
    with pytest.raises(ByonError, match="train.epochs: expected an integer"):
        load_config(None, {"method": "mae", "train": {"epochs": "many"}})
    with pytest.raises(ByonError, match=r"mae.mask_ratio must be in \[0, 1\)"):
        load_config(None, {"method": "mae", "mae": {"mask_ratio": 1.2}})
    with pytest.raises(ByonError, match="--set expects section.key=value"):
        parse_set(["blr=1"])


def test_inherit_merges_parent(tmp_path):
    (tmp_path / "base.yaml").write_text("method: mae\ntrain: {epochs: 3, batch_size: 32}\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\ntrain: {epochs: 5}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.batch_size) == (5, 32)


def test_round_trip_through_to_dict():
    cfg = load_config(None, {"method": "mae", "data": {"crop_scale": [0.5, 1.0]}})
    again = load_config(None, cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"supervised"}))
def test_every_method_has_an_imagenet_recipe(method):
    """configs/<method>/imagenet.yaml: the paper's ViT-B/16 at 224 px on an image folder, its sources in the header."""
    path = Path(__file__).resolve().parents[1] / "configs" / method / "imagenet.yaml"
    cfg = load_config(str(path), {})
    assert (cfg.method, cfg.model.preset, cfg.data.image_size, cfg.data.dataset) == (method, "vit-base", 224,
                                                                                      "imagefolder")
    assert cfg.data.storage == "auto" and cfg.train.epochs == 400
    header = path.read_text().split("\nmethod:")[0]
    assert header.startswith("# ") and ("papers/" in header or "et al." in header)
