"""Streaming image folders and shards: the same batches for any number of workers, the in-memory loader's order
and rank shards, exact resume, on_bad_file, and the storage choice."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byon.cli import main
from byon.data import BatchLoader, load_dataset
from byon.data.datasets import open_dataset, open_split, plan_storage
from byon.data.shards import write_shards
from byon.data.stream import StreamLoader, crop_box, decode, sample_seed
from byon.data.synthetic import write_jpeg_folder
from byon.errors import ByonError


def jpeg_folder(root: Path, per_class: int = 40, classes: int = 3, seed: int = 0) -> Path:
    """classes × per_class small JPEGs of assorted sizes (24–40 px), plus one grayscale PNG."""
    write_jpeg_folder(root, per_class * classes, (24, 40), classes, seed)
    gray = np.random.default_rng(seed).integers(0, 256, (30, 30), dtype=np.uint8)
    Image.fromarray(gray).save(root / "class0" / "gray.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return jpeg_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "s"
    write_shards(folder, out, shard_size=50)
    return out


def batches(data, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(StreamLoader(data, kw.pop("batch_size", 16), seed=kw.pop("seed", 3), **kw))


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def test_same_batches_with_0_and_2_workers(folder):
    data = open_dataset("imagefolder", "train", folder, 16)
    a, b = batches(data, num_workers=0), batches(data, num_workers=2)
    assert len(a) == len(data) // 16 == 7
    assert a[0][0].shape == (16, 3, 16, 16) and a[0][0].dtype == torch.uint8
    assert same(a, b)
    assert not torch.equal(a[0][0], batches(data, seed=4)[0][0])


def test_crops_are_keyed_by_sample_not_by_batch(folder):
    """Each sample's crop depends on (seed, epoch, index) only: batch size 8 and 16 decode the same images."""
    data = open_dataset("imagefolder", "train", folder, 16)
    a, b = batches(data, batch_size=8), batches(data, batch_size=16)
    assert torch.equal(torch.cat([x for x, _ in a])[:112], torch.cat([x for x, _ in b]))
    loader = StreamLoader(data, 16, seed=3)
    first, second = next(iter(loader))[0], None
    loader.set_epoch(1)
    second = next(iter(loader))[0]
    assert not torch.equal(first, second)  # a new epoch draws new crops (and a new order)


def test_order_and_rank_shards_match_the_in_memory_loader(folder):
    memory = load_dataset("imagefolder", "train", folder, image_size=16)
    data = open_dataset("imagefolder", "train", folder, 16)
    assert torch.equal(memory.labels, data.labels)
    for rank in (0, 1):
        mem = [y for _, y in BatchLoader(memory, 8, seed=5, rank=rank, world_size=2)]
        st = [y for _, y in StreamLoader(data, 8, seed=5, rank=rank, world_size=2)]
        assert len(mem) == len(st) == 7 and all(torch.equal(a, b) for a, b in zip(mem, st))


@pytest.mark.parametrize("source", ["imagefolder", "shards"])
def test_resume_mid_epoch_repeats_the_remaining_batches(source, folder, shards):
    data = open_dataset(source, "train", folder if source == "imagefolder" else shards, 16)
    straight = StreamLoader(data, 16, seed=1, num_workers=2)
    want = list(straight) + list(straight)  # two epochs
    loader = StreamLoader(data, 16, seed=1, num_workers=2)
    it = iter(loader)
    got = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    resumed = StreamLoader(data, 16, seed=1, num_workers=0)
    resumed.load_state_dict(state)
    got += list(resumed) + list(resumed)
    assert same(got, want)


def test_shards_hold_the_folder_and_stream_its_batches(folder, shards):
    a = open_dataset("imagefolder", "train", folder, 16)
    b = open_dataset("shards", "train", shards, 16)
    assert len(a) == len(b) == 121 and torch.equal(a.labels, b.labels)
    assert a.reader.read(7) == b.reader.read(7)
    assert len(list((shards / "train").glob("shard-*.tar"))) == 3
    assert same(batches(a, rank=1, world_size=2), batches(b, rank=1, world_size=2, num_workers=2))
    memory = load_dataset("shards", "train", shards, image_size=16)
    assert memory.images.shape == (121, 3, 16, 16) and torch.equal(memory.labels, a.labels)


def test_shards_refuse_an_existing_output_and_missing_index(folder, shards, tmp_path):
    with pytest.raises(ByonError, match="already holds shards"):
        write_shards(folder, shards)
    with pytest.raises(ByonError, match="byon data shard"):
        open_dataset("shards", "train", tmp_path, 16)


def test_unreadable_image_fails_or_is_skipped_and_counted(folder, tmp_path, caplog):
    bad_folder = jpeg_folder(tmp_path / "f", per_class=12, classes=2)
    bad = bad_folder / "class1" / "000005.jpg"
    bad.write_bytes(b"not an image")
    data = open_dataset("imagefolder", "train", bad_folder, 16)
    with pytest.raises(ByonError) as e:
        batches(data, batch_size=25, shuffle=False)
    assert str(bad) in str(e.value) and "on_bad_file=skip" in str(e.value) and "\n" not in str(e.value)
    loader = StreamLoader(data, 25, shuffle=False, on_bad_file="skip", num_workers=2)
    with caplog.at_level(logging.WARNING):
        sizes = [len(x) for x, _ in loader]
    assert sizes == [24] and loader.skipped == 1 and "skipped 1 unreadable" in caplog.text


def test_decode_crop_draws_from_the_sample_seed():
    assert sample_seed(0, 0, 1) != sample_seed(0, 1, 0) != sample_seed(1, 0, 0)
    x0, y0, cw, ch = crop_box(100, 50, [0.0, 0.5, 1.0, 1.0], (0.25, 1.0), (1.0, 1.0))
    assert cw == ch == pytest.approx(1250**0.5) and (x0, y0) == (pytest.approx(100 - cw), pytest.approx(50 - ch))
    im = Image.fromarray(np.full((60, 80, 3), 200, dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = decode(buf.getvalue(), 24, (0.2, 1.0), seed=5)
    assert out.shape == (24, 24, 3) and (out == 200).all()


def test_plan_storage_auto_streams_above_the_budget(folder, shards):
    listed = open_split("imagefolder", "train", folder, 16)
    small, _ = plan_storage("imagefolder", "auto", listed, 16, 1.0, 2)
    big, line = plan_storage("imagefolder", "auto", listed, 16, 1e-6, 2)
    assert (small, big) == ("memory", "stream") and "streamed" in line and "121 images" in line
    assert plan_storage("imagefolder", "memory", listed, 16, 1e-6, 2)[0] == "memory"
    with Image.open(listed.reader.name(0)) as im:  # without data.image_size: the first image's size
        assert f"at {im.size[0]}x{im.size[1]} px" in plan_storage("imagefolder", "auto", listed, None, 1.0, 2)[1]
    assert plan_storage("shards", "auto", open_split("shards", "train", shards, 16), None, None, 2)[0] == "stream"
    assert plan_storage("synthetic", "auto", None, None, None, 2)[0] == "memory"
    with pytest.raises(ByonError, match="always held in memory"):
        plan_storage("synthetic", "stream", None, None, None, 2)


def test_data_shard_command(folder, tmp_path, capsys):
    assert main(["data", "shard", "--images", str(folder), "--out", str(tmp_path / "s"), "--shard-size", "100"]) == 0
    assert "train: 121 images" in capsys.readouterr().out
    assert len(open_dataset("shards", "train", tmp_path / "s", 16)) == 121
    assert main(["data", "shard", "--images", str(folder), "--out", str(tmp_path / "s")]) == 2
