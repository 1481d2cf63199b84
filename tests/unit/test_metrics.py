"""Metric functions on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from diffumnist.metrics import (
    class_balance,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    guided_accuracy,
    precision_recall,
)


def _random_spd(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_identical_sets_have_zero_distance():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_gaussians_match_the_closed_form():
    """For diagonal covariances tr(sqrt(Σ1Σ2)) = Σ sqrt(s1_i s2_i)."""
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    expected = (mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected.item(), rel=1e-10)


def test_full_covariances_match_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = _random_spd(8, 1), _random_spd(8, 2)
    mu1, mu2 = torch.zeros(8, dtype=torch.float64), torch.full((8,), 0.5, dtype=torch.float64)
    cross = scipy_linalg.sqrtm((s1 @ s2).numpy()).real.trace()
    expected = 8 * 0.25 + s1.trace().item() + s2.trace().item() - 2 * cross
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_same_covariance_gives_squared_mean_distance():
    s = _random_spd(5, 3)
    mu2 = torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert frechet_distance(torch.zeros(5), s, mu2, s) == pytest.approx(25.0, rel=1e-8)


def test_sample_estimate_converges_to_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 4, generator=g, dtype=torch.float64) * 2 + 1
    expected = 4 * 1.0 + 4 * (1 + 4 - 2 * 2)  # |Δμ|² + Σ(1 + 4 − 2·√4)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=0.05)
    mean, cov = feature_statistics(a)
    assert mean.shape == (4,) and cov.shape == (4, 4)


def test_precision_recall_identical_and_disjoint_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)


def test_precision_recall_detect_mode_collapse():
    """Fakes from one corner of the real data: precise but with low recall."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    collapsed = real[real[:, 0] > 1.0]
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.4


def test_guided_accuracy_and_balance():
    requested = torch.tensor([0, 0, 1, 1])
    predicted = torch.tensor([0, 1, 1, 1])
    accuracy = guided_accuracy(predicted, requested)
    assert accuracy["overall"] == 0.75 and accuracy["per_digit"] == {0: 0.5, 1: 1.0}
    balance = class_balance(torch.arange(10).repeat(3))
    assert balance["entropy_bits"] == pytest.approx(math.log2(10))
    assert class_balance(torch.zeros(5, dtype=torch.long))["entropy_bits"] == 0.0
