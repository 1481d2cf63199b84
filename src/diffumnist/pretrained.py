"""The trained models shipped inside the package: usable offline, with no training.

    model = diffumnist.load_pretrained("class")
    samples, animation = model.sample(torch.tensor([5]), guidance_scale=5.0, seed=42)

A kind's name (denoiser, time, class) always loads the recipe's model; weights trained
beyond the recipe load by their own names. MODEL_CARD.md says how each file was trained and
how it measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffumnist.config import KIND_NAMES, check_choice

if TYPE_CHECKING:
    from diffumnist.models import Denoiser, DiffusionModel

# Weights beyond the recipe, by name, with the kind each is (whose presets and weak twin it
# takes); how each was trained: TRAINED_HOW below, and MODEL_CARD.md.
BEYOND_RECIPE: dict[str, str] = {"time_e34": "time", "class_cpu": "class"}
PRETRAINED_NAMES: tuple[str, ...] = (*KIND_NAMES, *BEYOND_RECIPE)
# The shipped models that sample (all but the denoiser), by name, with their kinds.
# (kinds.KINDS[kind].samples; named here so the CLI needs no torch to list them, and a test
# checks that the two agree)
SAMPLING_MODELS: dict[str, str] = {"time": "time", "class": "class", **BEYOND_RECIPE}
# How each of them was trained, in one plain sentence (the page shows it beside the model).
TRAINED_HOW: dict[str, str] = {
    "time": "The recipe's 20 epochs.",
    "class": "The recipe's 20 epochs.",
    "time_e34": "The recipe's run trained on to 34 epochs.",
    "class_cpu": "Trained in 37 minutes on a 2-core CPU (--preset fast at batch 128, 8 epochs).",
}


def pretrained_path(name: str) -> Path:
    """Where the shipped model called `name` (PRETRAINED_NAMES) lives."""
    from diffumnist.checkpoint import shipped_weights

    check_choice("pretrained model", name, PRETRAINED_NAMES)
    return shipped_weights(name)


def load_pretrained(name: str = "class") -> DiffusionModel | Denoiser:
    """The shipped model called `name` (PRETRAINED_NAMES), on the CPU, in eval mode."""
    from diffumnist.models import load

    return load(pretrained_path(name))
