"""The judge and the evaluation pipeline on real digits, where the answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffumnist.classifier import accuracy_on_test_split, classify, load_classifier
from diffumnist.config import ConfigError
from diffumnist.data import load_split
from diffumnist.evaluate import (
    denoiser_robustness,
    format_scores,
    generate,
    load_npz,
    save_npz,
    score_samples,
)
from diffumnist.sampling import SamplingConfig


def test_shipped_judge_reaches_its_stated_accuracy(data_dir):
    judge, meta = load_classifier()
    accuracy = accuracy_on_test_split(judge, data_dir)
    assert accuracy >= 0.993
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9)


def test_real_test_split_scores_like_real_digits(data_dir):
    """Scored as 'samples', the test split's guided accuracy is the judge's accuracy, and
    its MNIST-FID sits at the floor (real training digits against the same test split)."""
    images, labels = load_split("test", data_dir)
    scores = score_samples(images, labels, data_dir)
    assert scores["guided_accuracy"]["overall"] == pytest.approx(scores["judge_test_accuracy"])
    assert scores["mnist_fid"] == pytest.approx(0.0, abs=1e-6)  # the reference set itself
    assert scores["mnist_fid_floor"] < 1.0
    assert scores["precision_floor"] > 0.6 and scores["recall_floor"] > 0.6
    subset = score_samples(images[:2000], labels[:2000], data_dir)
    assert subset["mnist_fid"] <= 2 * subset["mnist_fid_floor"] + 0.5
    assert "guided accuracy" in format_scores(subset)


def test_noise_scores_far_from_real_digits(data_dir):
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (500, 28, 28), dtype=torch.uint8, generator=g)
    scores = score_samples(noise, torch.arange(500) % 10, data_dir)
    assert scores["mnist_fid"] > 50 * max(scores["mnist_fid_floor"], 0.1)
    assert scores["guided_accuracy"]["overall"] < 0.3
    assert scores["precision"] < 0.1


def test_npz_round_trip_and_bad_files(tmp_path):
    images = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8)
    labels = torch.arange(12) % 10
    path = tmp_path / "s.npz"
    path.write_bytes(save_npz(images, labels))
    back_images, back_labels = load_npz(path)
    assert torch.equal(back_images, images) and torch.equal(back_labels, labels)
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28), dtype=np.float32), labels=[0] * 3)
    with pytest.raises(ConfigError):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(ConfigError):
        load_npz(tmp_path / "missing.npz")


def test_generate_is_balanced_and_reproducible_across_batch_splits(tiny_class_model):
    config = SamplingConfig(seed=3)
    a, labels = generate(tiny_class_model, 20, config, batch_size=10, progress=False)
    assert a.shape == (20, 28, 28) and labels.tolist() == [i % 10 for i in range(20)]
    b, _ = generate(tiny_class_model, 20, config, batch_size=10, progress=False)
    assert torch.equal(a, b)


def test_denoiser_robustness_table(data_dir):
    from diffumnist.config import ModelConfig
    from diffumnist.models import Denoiser

    identity_like = Denoiser(ModelConfig(kind="denoiser", hidden_dim=4))
    identity_like.denoise = lambda noisy, precision="fp32": noisy  # does nothing
    rows = denoiser_robustness(identity_like, data_dir)
    assert [r["sigma"] for r in rows] == [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    for row in rows:
        assert row["output_mse"] == pytest.approx(row["input_mse"])
        assert row["input_mse"] == pytest.approx(row["sigma"] ** 2, rel=0.01)


def test_judge_reads_real_digits_correctly(data_dir):
    judge, _ = load_classifier()
    images, labels = load_split("test", data_dir)
    predicted, features = classify(judge, images[:100])
    assert (predicted == labels[:100]).float().mean() > 0.97
    assert features.shape == (100, 128) and features.dtype == torch.float64
