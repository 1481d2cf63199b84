"""What the demo page may ask for: the limits it is told, and the checks its requests pass.

Why apart from the server: the limits the form shows and the checks that enforce them belong
together, as plain functions from JSON to typed values, testable without sockets or threads;
every refusal is a ConfigError whose one line the page shows, naming the setting at fault.
The sampling controls are described to the page from the settings' declarations
(`Setting.describe`) and checked by `SamplingConfig` itself (starting from the page's
preset), so a new setting reaches the page with no edit here; this module adds only what the
page alone sends: which model, which digits, the download scales, and the denoiser's source,
pixels and noise level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from diffumnist.checkpoint import shipped_weights
from diffumnist.config import ConfigError, check_choice, recipe
from diffumnist.data import add_noise, to_unit
from diffumnist.pretrained import SAMPLING_MODELS, TRAINED_HOW
from diffumnist.sampling import (
    PRESET_SUMMARIES,
    PRESETS,
    SAMPLER_NAMES,
    SEED_RANGE,
    SETTINGS,
    WEAK_GUIDE,
    SamplingConfig,
    from_preset,
)

PAGE_PRESET = "fast"  # the page's first settings; "recipe" is one click away
MAX_DIGITS = 10  # images per request
MAX_SIGMA = 2.0
TRAINED_SIGMA = recipe("denoiser").sigma  # the noise level the shipped denoiser learned
# Sampling settings the page may send: all but those declared page=False (precision: auto).
PAGE_SETTINGS = tuple(spec.name for spec in SETTINGS if spec.meta.get("page", True))
# Kinds whose weak twin ships, so the page may offer guide="weak" (never a path: the page
# must not name files on the server).
WEAK_GUIDES = tuple(kind for kind in PRESETS if shipped_weights(f"{kind}_weak").exists())
# The page's models by name, each with its kind: every shipped model that samples.
PAGE_MODELS: dict[str, str] = SAMPLING_MODELS


@dataclass(frozen=True)
class GenerateRequest:
    """One press of Generate: what to draw, and how (`sampling.steps` resolved against T)."""

    model: str = "class"
    digits: tuple[int, ...] = (5,)
    count: int = 1  # images from the time model, which takes no digits
    sampling: SamplingConfig = field(default_factory=lambda: PRESETS["class"][PAGE_PRESET])


def _page_control(control: dict[str, Any], num_timesteps: int) -> dict[str, Any]:
    """A setting as the page offers it: bounds that depend on the model's T filled in, and
    the guide a choice of the shipped weak twin only (the page never names files)."""
    if control["name"] in ("steps", "guidance_interval"):
        control |= {"min": control["min"] or 0, "max": num_timesteps}
    if control["name"] == "guide":
        control |= {"type": "choice", "choices": [WEAK_GUIDE]}
    return control


def form_info(num_timesteps: int) -> dict[str, Any]:
    """What the page builds its form from: each setting as declared (type, range, help,
    where it applies), the presets with a plain sentence each, and the page's own limits."""
    T = num_timesteps
    return {
        "preset": PAGE_PRESET,
        "models": PAGE_MODELS,
        "trained_how": {name: TRAINED_HOW[name] for name in PAGE_MODELS},
        "settings": [
            _page_control(spec.describe(), T) for spec in SETTINGS if spec.name in PAGE_SETTINGS
        ],
        "presets": {
            kind: {
                name: {"settings": config.to_dict(), "summary": PRESET_SUMMARIES[kind][name]}
                for name, config in presets.items()
            }
            for kind, presets in PRESETS.items()
        },
        "weak_guides": list(WEAK_GUIDES),
        "default_steps": {s: SamplingConfig(sampler=s).num_steps(T) for s in SAMPLER_NAMES},
        "num_timesteps": T,
        "max_digits": MAX_DIGITS,
        "seed_max": SEED_RANGE.stop - 1,
        "max_sigma": MAX_SIGMA,
        "trained_sigma": TRAINED_SIGMA,
    }


def _object(payload: object, allowed: set[str]) -> dict[str, Any]:
    """The payload as a dict, refusing anything that is not one or has unknown keys."""
    if not isinstance(payload, dict):
        raise ConfigError("the request must be a JSON object")
    if unknown := sorted(set(payload) - allowed):
        raise ConfigError(f"unknown field(s): {', '.join(map(str, unknown))}")
    return payload


def _number(data: dict[str, Any], name: str, default: float, low: int, high: float) -> Any:
    """data[name], checked to lie in [low, high]; whole when `default` is an int."""
    value, kind = data.get(name, default), type(default)
    if isinstance(value, bool) or not isinstance(value, kind | int) or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(
            f"{name} must be {what} from {low} to {high:g}; got {json.dumps(value)}", name
        )
    return value


def _int_list(value: object, name: str, high: int) -> tuple[int, ...]:
    """A list of whole numbers in [0, high], as digits or pixels arrive."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= high for v in value
    ):
        raise ConfigError(f"{name} must be a list of whole numbers 0-{high}", name)
    return tuple(value)


def parse_generate(payload: object, num_timesteps: int) -> GenerateRequest:
    """Check a Generate request; raise ConfigError naming the first bad field.

    SamplingConfig checks the sampling settings, starting from the page's preset: a null
    switches a preset's value off where the setting admits None, and is refused elsewhere.
    """
    data = _object(payload, {"model", "digits", "count", *PAGE_SETTINGS})
    model = data.get("model", "class")
    check_choice("model", model, tuple(PAGE_MODELS))
    kind = PAGE_MODELS[model]
    digits, count = GenerateRequest.digits, GenerateRequest.count
    if kind == "class":
        digits = _int_list(data.get("digits", list(digits)), "digits", 9)
        if not 1 <= len(digits) <= MAX_DIGITS:
            raise ConfigError(f"pick 1 to {MAX_DIGITS} digits; got {len(digits)}", "digits")
    else:
        count = _number(data, "count", count, 1, MAX_DIGITS)
    settings = {name: data[name] for name in PAGE_SETTINGS if name in data}
    if settings.get("guide") not in (None, WEAK_GUIDE) or (
        settings.get("guide") == WEAK_GUIDE and kind not in WEAK_GUIDES
    ):
        choices = "null or weak" if kind in WEAK_GUIDES else "null"
        raise ConfigError(f"guide must be {choices} for the {model} model here", "guide")
    config = from_preset(PAGE_PRESET, kind, **settings)
    config = config.replace(steps=config.num_steps(num_timesteps))
    return GenerateRequest(model=model, digits=digits, count=count, sampling=config)


def parse_denoise(
    payload: object, test_images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check a denoiser request; return (noisy = x + σ·ε, the clean x (1, 1, 28, 28), the
    test index or −1 for a drawing). Test digits are refused where MNIST is not on disk."""
    data = _object(payload, {"source", "index", "pixels", "sigma", "seed"})
    source = data.get("source", "test")
    check_choice("source", source, ("test", "canvas"))
    if source == "test" and len(test_images) == 0:
        raise ConfigError("MNIST test digits are not on this machine; draw a digit instead")
    if source == "test":
        index = _number(data, "index", 0, 0, len(test_images) - 1)
        clean = to_unit(test_images[index : index + 1].to(torch.uint8))
    elif len(pixels := _int_list(data.get("pixels"), "pixels", 255)) != 28 * 28:
        raise ConfigError(f"pixels must hold 28x28 = 784 values; got {len(pixels)}", "pixels")
    else:
        index, clean = -1, to_unit(torch.tensor(pixels, dtype=torch.uint8).reshape(1, 28, 28))
    sigma = _number(data, "sigma", float(TRAINED_SIGMA), 0, MAX_SIGMA)
    seed = _number(data, "seed", 0, 0, SEED_RANGE.stop - 1)
    return add_noise(clean, sigma, torch.Generator().manual_seed(seed)), clean, index
