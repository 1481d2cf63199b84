"""Two MNIST classifiers shipped in the package: the judge, which scores generated digits,
and the filter, which lets sampling redraw digits it cannot read.

The judge: Inception-based FID needs downloaded weights and reads grey 28x28 digits poorly,
so the project trains its own reference network (`diffumnist train classifier`). Its
128-dimensional penultimate layer is the feature space of MNIST-FID and of precision/recall;
its argmax is the verdict for guided accuracy.

The filter (`diffumnist train filter`, `SamplingConfig.reject_below`): a second reader of
another architecture (5x5 convolutions, no BatchNorm, a wider head) and another seed, so
that sampling never consults the network that scores it. Both are trained by one loop on
the training split and tested on the test split.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from diffumnist.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, shipped_weights
from diffumnist.config import ConfigError, check_choice
from diffumnist.data import iterate_batches, load_split, to_uint8, to_unit

FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """Four 3x3 convs with BN (28 -> 14 -> 7 -> 3), then 576 -> 128 -> 10."""

    def __init__(self) -> None:
        super().__init__()

        def conv(in_ch: int, out_ch: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()
            )

        self.body = nn.Sequential(
            conv(1, 16), conv(16, 32), nn.MaxPool2d(2),  # (N, 32, 14, 14)
            conv(32, 64), nn.MaxPool2d(2),  # (N, 64, 7, 7)
            conv(64, 64), nn.MaxPool2d(2),  # (N, 64, 3, 3)
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, FEATURE_DIM), nn.ReLU(),
        )  # fmt: skip
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 1, 28, 28) in [0, 1] -> (logits (N, 10), features (N, 128))."""
        features = self.body(x)
        return self.head(self.dropout(features)), features


class FilterClassifier(nn.Module):
    """Two 5x5 and two 3x3 convs without BN (28 -> 14 -> 7), then 3136 -> 256 -> 10: a reader
    built unlike the judge, so the two err on different digits where they can."""

    def __init__(self) -> None:
        super().__init__()

        def conv(in_ch: int, out_ch: int, size: int) -> list[nn.Module]:
            return [nn.Conv2d(in_ch, out_ch, size, padding=size // 2), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(1, 32, 5), *conv(32, 32, 5), nn.MaxPool2d(2),  # (N, 32, 14, 14)
            *conv(32, 64, 3), *conv(64, 64, 3), nn.MaxPool2d(2),  # (N, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256), nn.ReLU(),
        )  # fmt: skip
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 1, 28, 28) in [0, 1] -> (logits (N, 10), features (N, 256))."""
        features = self.body(x)
        return self.head(self.dropout(features)), features


@dataclass(frozen=True)
class Role:
    """What a classifier role is made of: its network, its shipped weights file (without
    .safetensors; also the name `diffumnist train` knows it by), and the epochs and seed
    those weights were trained with. Its checkpoint's metadata carries the role's name."""

    network: type[nn.Module]
    shipped: str
    epochs: int
    seed: int


ROLES: dict[str, Role] = {
    "judge": Role(MNISTClassifier, "classifier", epochs=6, seed=0),
    "filter": Role(FilterClassifier, "filter", epochs=4, seed=1),
}


def _random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels: cheap augmentation for the judge."""
    padded = F.pad(x, [max_shift] * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(28)  # (N, 28)
    cols = offsets[:, 1, None] + torch.arange(28)
    batch = torch.arange(x.shape[0])[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def train_classifier(
    out_path: Path,
    data_dir: Path | str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    role: str = "judge",
) -> float:
    """Train the judge (or the filter) on the training split; write its weights in fp16;
    return the test accuracy of the weights as written. `epochs` and `seed` default to
    those the role's shipped weights were trained with."""
    check_choice("classifier role", role, tuple(ROLES))
    epochs = ROLES[role].epochs if epochs is None else epochs
    seed = ROLES[role].seed if seed is None else seed
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_split("train", data_dir)
    net = ROLES[role].network()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps_per_epoch = math.ceil(len(images) / 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 4e-3, total_steps=epochs * steps_per_epoch
    )
    for epoch in range(epochs):
        net.train()
        batches = iterate_batches(len(images), 128, generator)
        for index in tqdm(batches, total=steps_per_epoch, desc=f"classifier epoch {epoch + 1}"):
            x = _random_shift(to_unit(images[index]), generator)
            loss = F.cross_entropy(net(x)[0], labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    weights = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    accuracy = accuracy_on_test_split(net, data_dir)
    meta = {role: True, "test_accuracy": accuracy, "seed": seed, "epochs": epochs}
    save_checkpoint(out_path, Checkpoint(None, weights, meta=meta))
    return accuracy


@torch.inference_mode()
def classify(
    net: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) -> (predicted digits (N,), features float64 (N, F)); F is
    128 for the judge, whose features MNIST-FID uses, and 256 for the filter."""
    net.eval()
    predictions, features = [], []
    for start in range(0, len(images), batch_size):
        logits, feats = net(to_unit(images[start : start + batch_size]))
        predictions.append(logits.argmax(1))
        features.append(feats.double())
    return torch.cat(predictions), torch.cat(features)


def accuracy_on_test_split(net: nn.Module, data_dir: Path | str | None = None) -> float:
    images, labels = load_split("test", data_dir)
    predictions, _ = classify(net, images)
    return (predictions == labels).double().mean().item()


def load_classifier(path: Path | str | None = None, role: str = "judge") -> tuple[nn.Module, dict]:
    """The shipped judge or filter (or the one at `path`) and its metadata (test accuracy,
    seed)."""
    check_choice("classifier role", role, tuple(ROLES))
    if path is None:
        path = shipped_weights(ROLES[role].shipped)
    ckpt = load_checkpoint(path)
    if not ckpt.meta.get(role):
        raise ConfigError(f"{path} is not a {role} checkpoint")
    net = ROLES[role].network()
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt.weights.items()}
    )
    return net.eval(), ckpt.meta


# Images per filter call: bounds the activations' memory (32 x 28 x 28 floats per image).
FILTER_BATCH = 1000


@functools.cache
def _shipped_filter() -> nn.Module:
    return load_classifier(role="filter")[0]


@torch.inference_mode()
def filter_confidence(images: torch.Tensor, digits: torch.Tensor | None) -> torch.Tensor:
    """The shipped filter's probability that each image (N, 1, 28, 28) in [0, 1] shows its
    digit (N,), or with `digits` None its likeliest digit; read, as the judge reads, from
    the image rounded to 8 bits, in fp32 on the CPU."""
    pixels = to_unit(to_uint8(images.cpu()))
    probabilities = torch.cat([
        _shipped_filter()(pixels[start : start + FILTER_BATCH])[0].softmax(1)
        for start in range(0, len(pixels), FILTER_BATCH)
    ])  # fmt: skip
    if digits is None:
        return probabilities.max(1).values
    return probabilities.gather(1, digits.view(-1, 1)).flatten()
