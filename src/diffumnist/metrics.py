"""Sample-quality metrics on classifier features, in float64.

- Fréchet distance (Heusel et al. 2017) between Gaussian fits of two feature sets, with the
  matrix square root taken through symmetric eigendecompositions, which stay real and
  stable where scipy's general `sqrtm` can return complex noise.
- Precision and recall of Kynkäänniemi et al. (2019): each set's manifold is the union of
  balls reaching each point's k-th nearest neighbour within its own set.
- Guided accuracy and class balance from the classifier's verdicts.
"""

from __future__ import annotations

import math

import torch


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, D) -> (mean (D,), covariance (D, D)), float64, unbiased."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues -> 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½).

    tr((Σ1 Σ2)^½) equals tr((Σ1^½ Σ2 Σ1^½)^½), and the latter is a symmetric PSD matrix.
    """
    mu1, mu2, sigma1, sigma2 = (v.double() for v in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross
    return max(value.item(), 0.0)


def fid_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start : start + chunk], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # +1 skips the point itself
    return torch.cat(radii)


def _inside_manifold(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 2048
) -> torch.Tensor:
    """For each query, whether it lies within some support point's ball."""
    inside = []
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start : start + chunk], support)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside real manifold) and recall (real inside fake manifold)."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples in each set")
    real, fake = real.double(), fake.double()
    precision = _inside_manifold(fake, real, _kth_neighbour_radii(real, k)).double().mean()
    recall = _inside_manifold(real, fake, _kth_neighbour_radii(fake, k)).double().mean()
    return precision.item(), recall.item()


def guided_accuracy(predicted: torch.Tensor, requested: torch.Tensor) -> dict[str, object]:
    """Share of samples read as the requested digit: overall and per digit."""
    correct = (predicted == requested).double()
    per_digit = {int(d): correct[requested == d].mean().item() for d in requested.unique().tolist()}
    return {"overall": correct.mean().item(), "per_digit": per_digit}


def class_balance(predicted: torch.Tensor, num_classes: int = 10) -> dict[str, object]:
    """Histogram of predicted digits and its entropy in bits (uniform = log2 10 ≈ 3.32)."""
    counts = torch.bincount(predicted.long(), minlength=num_classes).double()
    shares = counts / counts.sum()
    nonzero = shares[shares > 0]
    entropy = -(nonzero * nonzero.log2()).sum().item()
    return {
        "histogram": [int(c) for c in counts.tolist()],
        "entropy_bits": entropy,
        "max_entropy_bits": math.log2(num_classes),
    }
