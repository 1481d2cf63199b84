"""MNIST in memory: the one place where pixels are converted.

Each split is read once into a uint8 tensor (60k x 28 x 28 is 47 MB) and batched by
indexing with a seeded permutation: on two CPU cores a per-sample DataLoader costs more
than the network. Pixels follow the recipe (`ToTensor`): floats in [0, 1].

Files are looked up as torchvision lays them out (`<data_dir>/MNIST/raw/`), plain or
gzipped. When they are missing, torchvision's downloader fetches them, as it does for any
torchvision user.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file

from diffumnist.config import ConfigError, default_data_dir

Split = Literal["train", "test"]
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = [name for pair in SPLIT_FILES.values() for name in pair]
_IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions -> IDX magic number for uint8 data


class DataError(ConfigError):
    """MNIST could not be found, downloaded or read."""


def _data_error(data_dir: Path, reason: str) -> DataError:
    return DataError(
        f"{reason}; MNIST is looked for in {data_dir / 'MNIST' / 'raw'} (set --data-dir or "
        f"DIFFUMNIST_DATA), which must hold {', '.join(ALL_FILES)} (optionally .gz)"
    )


def _find(raw_dir: Path, name: str) -> Path | None:
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(data_dir: Path) -> None:
    """Fetch the four files with torchvision; raise DataError on any failure."""
    from torchvision.datasets import MNIST

    for train in (True, False):
        try:
            MNIST(root=str(data_dir), train=train, download=True)
        except Exception as exc:  # network, permissions, checksum: all mean "not available"
            raise _data_error(
                data_dir, f"MNIST is missing and the download failed ({exc})"
            ) from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an uncompressed or gzipped IDX file of uint8 values with `ndim` dimensions.

    The header states the shape, so a truncated or padded file is detected here.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path.name} is too short to be an IDX file")
    header = np.frombuffer(raw[:header_len], dtype=">u4")
    if header[0] != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path.name} has the wrong IDX magic number {header[0]}")
    shape = tuple(int(n) for n in header[1:])
    if len(raw) - header_len != int(np.prod(shape)):
        raise ValueError(f"{path.name} is truncated or corrupt (size does not match header)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_cached(split: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    raw_dir = data_dir / "MNIST" / "raw"
    image_name, label_name = SPLIT_FILES[split]
    if download and (_find(raw_dir, image_name) is None or _find(raw_dir, label_name) is None):
        _download(data_dir)
    paths = [_find(raw_dir, name) for name in (image_name, label_name)]
    if None in paths:
        raise _data_error(data_dir, "MNIST files are missing")
    try:
        images = read_idx(paths[0], ndim=3)
        labels = read_idx(paths[1], ndim=1)
    except (OSError, ValueError, EOFError) as exc:
        raise _data_error(data_dir, f"an MNIST file is unreadable ({exc})") from exc
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise _data_error(data_dir, "MNIST images and labels do not match")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_split(
    split: Split, data_dir: Path | str | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of one MNIST split."""
    if split not in SPLIT_FILES:
        raise ConfigError(f"split must be train or test; got {split!r}")
    resolved = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return _load_cached(split, resolved.resolve(), download)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], as `ToTensor` gives."""
    return images.unsqueeze(1).float().div_(255.0)


def add_noise(clean: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """clean + σ·ε with ε ~ N(0, I) drawn on the CPU generator (the same on every device):
    the single-step denoiser's corruption, used for its training previews, figures,
    evaluation and the UI."""
    noise = torch.randn(clean.shape, generator=generator)
    return clean + sigma * noise.to(clean.device)


def mean_images(data_dir: Path | str | None = None) -> torch.Tensor:
    """The mean training image of each digit and then of all digits: (11, 1, 28, 28) in [0, 1].

    Sampling with `start="mean"` starts from the forward process at t = T applied to these
    (x_T = √ᾱ_T·μ + √(1 − ᾱ_T)·z; see sampling.py). They ship as
    weights/mnist_means.safetensors, written by `save_file({"means": mean_images()}, ...)`,
    so sampling needs no MNIST on disk.
    """
    images, labels = load_split("train", data_dir)
    pixels = to_unit(images).double()
    means = [pixels[labels == digit].mean(0) for digit in range(10)] + [pixels.mean(0)]
    return torch.stack(means).float()


@functools.cache
def shipped_mean_images() -> torch.Tensor:
    """`mean_images()` of the MNIST training split as shipped with the package."""
    path = resources.files("diffumnist") / "weights" / "mnist_means.safetensors"
    return load_file(str(path))["means"]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float (N, 1, H, W) in roughly [0, 1] -> uint8 (N, H, W), clamped and rounded."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).squeeze(1).cpu()


def iterate_batches(
    num_items: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield index tensors covering a fresh permutation of range(num_items) once.

    The last batch may be smaller, as with a shuffled DataLoader that keeps it.
    """
    order = torch.randperm(num_items, generator=generator)
    yield from order.split(batch_size)
