"""Command-line flags made from the dataclasses that own the settings, and argument types.

`add_train_flags` writes one flag per TrainConfig field and `add_sampling_flags` one per
SamplingConfig field (plus --preset), each with the field's help text, so the CLI never
restates a default or a range.
"""

from __future__ import annotations

import argparse
import dataclasses
from importlib.metadata import PackageNotFoundError, version
from typing import get_args

import numpy as np
import torch

from diffumnist.config import BatchNormMode, ConfigError, DeviceName, Precision, TrainConfig
from diffumnist.runtime import resolve_precision
from diffumnist.sampling import (
    PRESET_NAMES,
    PRESETS,
    SAMPLER_NAMES,
    SEED_RANGE,
    SamplingConfig,
    SpacingName,
    StartName,
)

_FLAG_TYPES = {"int": int, "float": float}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}
_FLAG_CHOICES = {
    "Precision": get_args(Precision),
    "DeviceName": get_args(DeviceName),
    "BatchNormMode": get_args(BatchNormMode),
    "SamplerName": SAMPLER_NAMES,
    "StartName": get_args(StartName),
    "SpacingName": get_args(SpacingName),
}
DEVICE_HELP = "where to run: auto = a CUDA GPU when there is one, else the CPU"


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every flag's default (where it has one), and keeps the descriptions' lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def parse_digits(text: str) -> list[int]:
    """'0-9', '3', '1,3,5' or '0-4,7' -> list of digits, each checked to lie in 0..9."""
    digits: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if not (0 <= first <= 9 and 0 <= last <= 9 and first <= last):
                raise ValueError
            digits.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(
            f"--digits must be digits 0-9 like 0-9, 3 or 1,3,5; got {text!r}"
        ) from None
    return digits


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in SEED_RANGE:
        raise argparse.ArgumentTypeError(
            f"must be an integer in 0..{SEED_RANGE.stop - 1}, got {text!r}"
        )
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def timestep_interval(text: str) -> tuple[int, int] | None:
    """'LO,HI' -> (LO, HI); 'none' -> None (every step: drops a preset's interval).
    SamplingConfig checks the values themselves."""
    if text == "none":
        return None
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be two whole timesteps LO,HI such as 30,180; got {text!r}"
        ) from None
    return low, high


def guide_value(text: str) -> str | None:
    """'none' -> None (no guide: drops a preset's), else the name or path as given."""
    return None if text == "none" else text


def probability_or_none(text: str) -> float | None:
    """'none' -> None (keep every draw: drops a preset's threshold), else a finite number
    (SamplingConfig checks its range)."""
    return None if text == "none" else finite_float(text)


_SAMPLING_TYPES = {
    "steps": positive_int,
    "eta": finite_float,
    "guidance_scale": finite_float,
    "guidance_interval": timestep_interval,
    "guide": guide_value,
    "reject_below": probability_or_none,
    "seed": seed_int,
}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and defaults taken from the dataclass."""
    for field in dataclasses.fields(TrainConfig):
        if field.name == "kind":
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if field.default is not None:
            help_text += f" (default: {field.default})"
        kwargs = {"help": help_text, "default": argparse.SUPPRESS}
        if field.type in _FLAG_CHOICES:
            kwargs["choices"] = _FLAG_CHOICES[field.type]
        elif field.name == "seed":
            kwargs["type"] = seed_int
        else:
            kwargs["type"] = _FLAG_TYPES[field.type.split(" ")[0]]
        parser.add_argument(flag, **kwargs)


def add_sampling_flags(parser: argparse.ArgumentParser, seed: int | None = None) -> None:
    """--preset and one flag per SamplingConfig field; a flag given wins over the preset.

    seed None: the command fixes its own seeds and offers no --seed.
    """
    group = parser.add_argument_group(
        "sampling", "Settings default to the --preset's for the model's kind; any flag given "
        "overrides it.\n  " + "\n  ".join(
            f"{name} ({kind}): {presets[name].describe(with_seed=False, guided=kind == 'class')}"
            for name in PRESET_NAMES for kind, presets in PRESETS.items()
        ),
    )  # fmt: skip
    group.add_argument("--preset", choices=PRESET_NAMES, default="recipe",
                       help="named sampling settings (README: quality map)")  # fmt: skip
    for field in dataclasses.fields(SamplingConfig):
        if field.name == "seed" and seed is None:
            continue
        kwargs = {"help": field.metadata["help"], "default": argparse.SUPPRESS}
        if field.name == "seed":
            kwargs |= {"default": seed, "help": "seed of the initial noise"}
        if field.type in _FLAG_CHOICES:
            kwargs["choices"] = _FLAG_CHOICES[field.type]
        elif field.type == "bool":  # --clip-x0 / --no-clip-x0, so a preset's value can be undone
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _SAMPLING_TYPES[field.name]
        if field.name == "guidance_interval":
            kwargs["metavar"] = "none|LO,HI"
        if field.name == "guide":
            kwargs["metavar"] = "none|weak|CKPT"
        if field.name == "reject_below":
            kwargs["metavar"] = "none|P"
        group.add_argument("--" + field.name.replace("_", "-"), **kwargs)


def sampling_config(args: argparse.Namespace, device: torch.device, kind: str) -> SamplingConfig:
    """The flags' SamplingConfig for a model of `kind`, its precision resolved for `device`
    (so it can be shown)."""
    given = {name: value for name, value in vars(args).items() if name in _SAMPLING_FIELDS}
    config = SamplingConfig.from_preset(args.preset, kind, **given)
    return config.replace(precision=resolve_precision(config.precision, device))


def add_nproc_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=help_text)


def version_text() -> str:
    try:
        return f"diffumnist {version('diffumnist')} (torch {torch.__version__})"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return f"diffumnist (not installed; torch {torch.__version__})"
