"""MNIST loading: the canonical files, gzipped copies, and clear errors for bad ones."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from diffumnist.data import (
    ALL_FILES,
    DataError,
    iterate_batches,
    load_split,
    mean_images,
    shipped_mean_images,
    to_uint8,
    to_unit,
)


def test_test_split_loads_as_uint8(data_dir):
    images, labels = load_split("test", data_dir)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and set(labels.unique().tolist()) == set(range(10))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the famous first test digits


def test_gzipped_files_are_accepted(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ALL_FILES:
        with (
            (data_dir / "MNIST" / "raw" / name).open("rb") as src,
            gzip.open(raw / f"{name}.gz", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    plain = load_split("test", data_dir)
    zipped = load_split("test", tmp_path, download=False)
    assert torch.equal(plain[0], zipped[0]) and torch.equal(plain[1], zipped[1])


def _copy_raw(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ALL_FILES:
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    return raw


def test_truncated_file_is_a_clear_error(data_dir, tmp_path):
    raw = _copy_raw(data_dir, tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_split("test", tmp_path, download=False)


def test_missing_files_name_the_setting_and_the_files(tmp_path):
    with pytest.raises(DataError) as info:
        load_split("test", tmp_path / "empty", download=False)
    message = str(info.value)
    assert "DIFFUMNIST_DATA" in message and all(name in message for name in ALL_FILES)
    assert "\n" not in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refuses at once
    with pytest.raises(DataError, match="download failed"):
        load_split("test", tmp_path / "nowhere")


def test_batches_cover_every_item_once_per_epoch():
    generator = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(10, 4, generator))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_pixel_conversion_round_trips():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    unit = to_unit(images)
    assert unit.shape == (3, 1, 28, 28) and unit.min() >= 0 and unit.max() <= 1
    assert torch.equal(to_uint8(unit), images)


def test_the_shipped_mean_images_are_those_of_the_training_split(data_dir):
    """What start="mean" samples from: rows 0-9 each digit's mean, row 10 all digits'."""
    computed = mean_images(data_dir)
    assert computed.shape == (11, 1, 28, 28)
    # float64 sums may round differently on another CPU; a float32 ulp is 6e-8 near 1
    torch.testing.assert_close(shipped_mean_images(), computed, rtol=0, atol=1e-6)
    images, labels = load_split("train", data_dir)
    torch.testing.assert_close(computed[3, 0], to_unit(images[labels == 3]).mean((0, 1)))
