"""The trained recipe models shipped inside the package: usable offline, with no training.

    model = diffumnist.load_pretrained("class")
    samples, animation = model.sample(torch.tensor([5]), guidance_scale=5.0, seed=42)

MODEL_CARD.md says how each file was trained and how it measures.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from diffumnist.config import check_choice
from diffumnist.kinds import KIND_NAMES
from diffumnist.models import Denoiser, DiffusionModel, load


def shipped_weights(name: str) -> Path:
    """The file `weights/<name>.safetensors` inside the installed package."""
    return Path(str(resources.files("diffumnist") / "weights" / f"{name}.safetensors"))


def pretrained_path(kind: str) -> Path:
    """Where the shipped weights of `kind` (denoiser, time or class) live."""
    check_choice("pretrained model", kind, KIND_NAMES)
    return shipped_weights(kind)


def load_pretrained(kind: str = "class") -> DiffusionModel | Denoiser:
    """The shipped model of `kind`, on the CPU, in eval mode."""
    return load(pretrained_path(kind))
