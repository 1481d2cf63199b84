"""The judge: a small MNIST classifier whose features and verdicts score generated digits.

Inception-based FID needs downloaded weights and reads grey 28x28 digits poorly, so the
project trains its own reference network (`diffumnist train classifier`) and ships its
weights in the package. Its 128-dimensional penultimate layer is the feature space of
MNIST-FID and of precision/recall; its argmax is the verdict for guided accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from diffumnist.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from diffumnist.config import ConfigError
from diffumnist.data import iterate_batches, load_split, to_unit
from diffumnist.pretrained import shipped_weights

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


def _random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels: cheap augmentation for the judge."""
    padded = F.pad(x, [max_shift] * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(28)  # (N, 28)
    cols = offsets[:, 1, None] + torch.arange(28)
    batch = torch.arange(x.shape[0])[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def train_classifier(
    out_path: Path, data_dir: Path | str | None = None, epochs: int = 6, seed: int = 0
) -> float:
    """Train the judge on the training split; write its weights; return test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_split("train", data_dir)
    net = MNISTClassifier()
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
    meta = {"judge": True, "test_accuracy": accuracy, "seed": seed}
    save_checkpoint(out_path, Checkpoint(None, weights, meta=meta))
    return accuracy


@torch.inference_mode()
def classify(
    net: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) -> (predicted digits (N,), features float64 (N, 128))."""
    net.eval()
    predictions, features = [], []
    for start in range(0, len(images), batch_size):
        logits, feats = net(to_unit(images[start : start + batch_size]))
        predictions.append(logits.argmax(1))
        features.append(feats.double())
    return torch.cat(predictions), torch.cat(features)


def accuracy_on_test_split(net: MNISTClassifier, data_dir: Path | str | None = None) -> float:
    images, labels = load_split("test", data_dir)
    predictions, _ = classify(net, images)
    return (predictions == labels).double().mean().item()


def load_classifier(path: Path | str | None = None) -> tuple[MNISTClassifier, dict]:
    """The shipped judge (or one at `path`) and its metadata (test accuracy, seed)."""
    if path is None:
        path = shipped_weights("classifier")
    ckpt = load_checkpoint(path)
    if not ckpt.meta.get("judge"):
        raise ConfigError(f"{path} is not a classifier checkpoint")
    net = MNISTClassifier()
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt.weights.items()}
    )
    return net.eval(), ckpt.meta
