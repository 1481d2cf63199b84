"""Measuring models: generate in batches, then score with the shipped judge.

Sample sets travel in the npz exchange format: `images` uint8 (N, 28, 28) and `labels`
int (N,), where -1 means "no class requested". Every distance is printed beside its
floor (the same distance for an equally sized subset of real training digits), so a
reader can tell how far from "as good as real" a number is.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError
from diffumnist.data import add_noise, load_split, to_uint8, to_unit
from diffumnist.distributed import SINGLE_PROCESS, World
from diffumnist.kinds.base import PREVIEW_SEED
from diffumnist.metrics import class_balance, fid_from_features, guided_accuracy, precision_recall
from diffumnist.models import Denoiser, DiffusionModel
from diffumnist.sampling import (
    MAX_SAMPLES_PER_CALL,
    PRESETS,
    SEED_RANGE,
    SamplingConfig,
    StepCallback,
)

# The noise levels the single-step denoiser is measured (and pictured) at; it trained at 0.5.
ROBUSTNESS_SIGMAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
MAX_EVAL_SAMPLES = 60_000


def batch_seed(seed: int, batch_index: int) -> int:
    """Each batch gets its own seed, so any split of the batches reproduces the same set.

    Kept in SEED_RANGE; the multiplier is odd, so distinct seeds give distinct first batches.
    """
    return (seed * 1_000_003 + batch_index) % SEED_RANGE.stop


def generate(
    model: DiffusionModel,
    n: int,
    config: SamplingConfig = PRESETS["class"]["recipe"],
    batch_size: int = 500,
    progress: bool = True,
    world: World = SINGLE_PROCESS,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples as (uint8 images (n, 28, 28), labels (n,)); class model: digits i % 10.

    `callback` sees every step of every draw of this rank's batches (e.g. to count redraws).

    With several ranks each generates a contiguous share of the batches and every rank
    receives the whole set; batch i is seeded with batch_seed(config.seed, i) wherever it
    runs, so the set is the one a single process makes.
    """
    if not 1 <= n <= MAX_EVAL_SAMPLES:
        raise ConfigError(f"n must lie in 1..{MAX_EVAL_SAMPLES}; got {n}")
    if not 1 <= batch_size <= MAX_SAMPLES_PER_CALL:  # refuse before the first batch, not in it
        raise ConfigError(f"batch_size must lie in 1..{MAX_SAMPLES_PER_CALL}; got {batch_size}")
    config.num_steps(model.diffusion.num_timesteps)  # refuse before the first batch too
    labels = torch.arange(n) % 10 if model.kind.conditional else torch.full((n,), -1)
    starts = range(0, n, batch_size)
    mine = range(len(starts))[world.shard(len(starts))]
    images = []
    for index in tqdm(
        mine, desc="sampling", unit="batch", disable=not (progress and world.is_main)
    ):
        batch = labels[starts[index] : starts[index] + batch_size]
        batch_config = config.replace(seed=batch_seed(config.seed, index))
        c, count = (batch, None) if model.kind.conditional else (None, len(batch))
        samples, _ = model.generate(c, batch_config, n=count, frame_every=10**9, callback=callback)
        images.append(to_uint8(samples))
    shares = world.all_gather(images)
    return torch.cat([batch for share in shares for batch in share]), labels


def training_scores(
    model: DiffusionModel, n: int, precision: str, data_dir: Path | str | None
) -> dict[str, float]:
    """The judge's quick verdict on n recipe samples (fixed seed), as training logs it."""
    config = SamplingConfig(seed=PREVIEW_SEED, precision=precision)
    scores = score_samples(*generate(model, n, config, progress=False), data_dir)
    entry = {"mnist_fid": scores["mnist_fid"], "mnist_fid_floor": scores["mnist_fid_floor"]}
    if "guided_accuracy" in scores:
        entry["guided_accuracy"] = scores["guided_accuracy"]["overall"]
    return entry


def save_npz(images: torch.Tensor, labels: torch.Tensor) -> bytes:
    """The exchange format as bytes (write them with files.write_atomic)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.numpy(), labels=labels.numpy().astype(np.int64))
    return buffer.getvalue()


def load_npz(path: Path | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and check a sample file in the exchange format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is not a sample file with images and labels ({exc})") from exc
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ConfigError(
            f"{path}: images must be uint8 N x 28 x 28; got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{path}: labels must be N integers")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


@functools.lru_cache(maxsize=2)
def _test_features(data_dir: str | None) -> torch.Tensor:
    """The judge's features of the whole MNIST test split (the reference set)."""
    judge, _ = load_classifier()
    return classify(judge, load_split("test", data_dir)[0])[1]


def score_samples(
    images: torch.Tensor, labels: torch.Tensor, data_dir: Path | str | None = None, seed: int = 0
) -> dict[str, object]:
    """All sample-quality metrics of one sample set, each beside its reference value."""
    if len(images) < 10:
        raise ConfigError(f"at least 10 samples are needed to score; got {len(images)}")
    judge, judge_meta = load_classifier()
    predicted, features = classify(judge, images)
    test_features = _test_features(str(data_dir) if data_dir else None)
    generator = torch.Generator().manual_seed(seed)
    train_images = load_split("train", data_dir)[0]
    size = min(len(images), len(train_images), len(test_features))
    real_subset = classify(
        judge, train_images[torch.randperm(len(train_images), generator=generator)[: len(images)]]
    )[1]
    test_subset = test_features[torch.randperm(len(test_features), generator=generator)[:size]]
    precision, recall = precision_recall(test_subset, features[:size])
    floor_precision, floor_recall = precision_recall(test_subset, real_subset[:size])
    result: dict[str, object] = {
        "n": len(images),
        "judge_test_accuracy": judge_meta["test_accuracy"],
        "mnist_fid": fid_from_features(features, test_features),
        "mnist_fid_floor": fid_from_features(real_subset, test_features),
        "precision": precision,
        "recall": recall,
        "precision_floor": floor_precision,
        "recall_floor": floor_recall,
        "class_balance": class_balance(predicted),
    }
    if bool((labels >= 0).all()):
        result["guided_accuracy"] = guided_accuracy(predicted, labels)
    return result


@torch.inference_mode()
def denoiser_robustness(
    denoiser: Denoiser,
    data_dir: Path | str | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    limit: int | None = None,
    precision: str = "auto",
) -> list[dict[str, float]]:
    """MSE and PSNR of the denoiser on the test split (its first `limit` digits) at each σ,
    beside the noisy input's."""
    clean_all = load_split("test", data_dir)[0][:limit]
    rows = []
    for sigma in ROBUSTNESS_SIGMAS:
        generator = torch.Generator().manual_seed(seed)
        input_error = output_error = 0.0
        for start in range(0, len(clean_all), batch_size):
            clean = to_unit(clean_all[start : start + batch_size])
            noisy = add_noise(clean, sigma, generator)
            input_error += (noisy - clean).square().sum().item()
            output_error += (denoiser.denoise(noisy, precision) - clean).square().sum().item()
        pixels = clean_all.numel()
        input_mse, output_mse = input_error / pixels, output_error / pixels
        rows.append({
            "sigma": sigma, "input_mse": input_mse, "input_psnr": psnr(input_mse),
            "output_mse": output_mse, "output_psnr": psnr(output_mse),
        })  # fmt: skip
    return rows


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for images with peak 1 (inf when mse is 0)."""
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def format_scores(scores: dict[str, object]) -> str:
    """A plain-text table of `score_samples` output."""
    lines = [
        f"samples                 {scores['n']}",
        f"MNIST-FID               {scores['mnist_fid']:.3f}   (floor, real train digits: "
        f"{scores['mnist_fid_floor']:.3f})",
        f"precision / recall      {scores['precision']:.3f} / {scores['recall']:.3f}   (floor: "
        f"{scores['precision_floor']:.3f} / {scores['recall_floor']:.3f})",
    ]
    balance = scores["class_balance"]
    lines.append(
        f"class balance           entropy {balance['entropy_bits']:.3f} of "
        f"{balance['max_entropy_bits']:.3f} bits; counts {balance['histogram']}"
    )
    if "guided_accuracy" in scores:
        accuracy = scores["guided_accuracy"]
        per_digit = " ".join(f"{d}:{v:.3f}" for d, v in accuracy["per_digit"].items())
        lines.append(
            f"guided accuracy         {accuracy['overall']:.4f}   (judge's own test accuracy: "
            f"{scores['judge_test_accuracy']:.4f})"
        )
        lines.append(f"  per digit             {per_digit}")
    return "\n".join(lines)


def format_robustness(rows: list[dict[str, float]]) -> str:
    lines = ["sigma   noisy MSE  noisy PSNR   denoised MSE  denoised PSNR"]
    for row in rows:
        lines.append(
            f"{row['sigma']:<7} {row['input_mse']:9.5f}  {row['input_psnr']:7.2f} dB   "
            f"{row['output_mse']:11.5f}  {row['output_psnr']:9.2f} dB"
        )
    return "\n".join(lines)
