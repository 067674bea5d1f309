from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from byon.data import load_dataset
from byon.errors import ByonError


def save(path, size=(8, 8), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 3)
    Image.new(mode, size, color).save(path)


def test_labelled_gray_folder(tmp_path):
    for cls, v in (("cat", 10), ("dog", 200)):
        for i in range(2):
            save(tmp_path / cls / f"{i}.png", value=v)
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", "train", root=tmp_path)
    assert data.images.shape == (4, 1, 8, 8) and data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.images[:, 0, 0, 0].tolist() == [10, 10, 200, 200]


def test_unlabelled_rgb_when_any_image_is_colour(tmp_path):
    save(tmp_path / "a.png", value=50)
    save(tmp_path / "b.jpg", mode="RGB", value=100)
    data = load_dataset("imagefolder", "train", root=tmp_path)
    assert data.labels is None and data.classes == [] and data.images.shape == (2, 3, 8, 8)
    assert data.images[0, :, 0, 0].tolist() == [50, 50, 50]  # grayscale replicated to RGB


def test_train_test_subfolders_share_classes(tmp_path):
    save(tmp_path / "train" / "a" / "0.png")
    save(tmp_path / "train" / "b" / "0.png")
    save(tmp_path / "val" / "b" / "0.png", value=9)
    test = load_dataset("imagefolder", "test", root=tmp_path)
    assert test.classes == ["a", "b"] and test.labels.tolist() == [1] and len(test) == 1
    assert len(load_dataset("imagefolder", "train", root=tmp_path)) == 2


def test_no_test_split_is_an_error(tmp_path):
    save(tmp_path / "a" / "0.png")
    with pytest.raises(ByonError, match="no train/ and test/") as e:
        load_dataset("imagefolder", "test", root=tmp_path)
    assert "split 'train'" not in str(e.value)  # no such option; the hint names what does exist
    assert f"move the images into {tmp_path / 'train'}/<class>/" in str(e.value)
    assert "--set data.val_size=N, then byon eval --split val" in str(e.value)


def test_unreadable_file_fail_and_skip(tmp_path, caplog):
    save(tmp_path / "a" / "0.png")
    save(tmp_path / "a" / "1.png", value=77)
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ByonError) as e:
        load_dataset("imagefolder", "train", root=tmp_path)
    assert str(bad) in str(e.value) and "on_bad_file" in str(e.value) and "\n" not in str(e.value)
    with caplog.at_level(logging.WARNING):
        data = load_dataset("imagefolder", "train", root=tmp_path, on_bad_file="skip")
    assert len(data) == 2 and data.images[:, 0, 0, 0].tolist() == [0, 77]
    assert any("skipped 1 unreadable" in r.getMessage() for r in caplog.records)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ByonError, match="holds no images"):
        load_dataset("imagefolder", "train", root=tmp_path / "empty")
    with pytest.raises(ByonError, match="does not exist"):
        load_dataset("imagefolder", "train", root=tmp_path / "nope")
    with pytest.raises(ByonError, match="--data-root"):
        load_dataset("imagefolder", "train")


def test_mixed_sizes_need_image_size(tmp_path):
    save(tmp_path / "a.png", size=(8, 8))
    arr = np.zeros((12, 16), np.uint8)
    arr[:, 8:] = 255
    Image.fromarray(arr).save(tmp_path / "b.png")
    with pytest.raises(ByonError, match="image_size"):
        load_dataset("imagefolder", "train", root=tmp_path)
    data = load_dataset("imagefolder", "train", root=tmp_path, image_size=6)
    assert data.images.shape == (2, 1, 6, 6) and data.img_size == 6
    # b.png: shorter side to 6 then a centre crop keeps the dark-left / bright-right split.
    assert data.images[1, 0, 0, 0] < 50 and data.images[1, 0, 0, -1] > 200
    assert torch.all(data.images[0] == 0)
