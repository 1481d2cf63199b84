"""Command-line flags made from the dataclasses that own the settings, and argument types.

`add_train_flags` writes one flag per TrainConfig field and `add_sampling_flags` one per
sampling setting (plus --preset), each from the field's declaration (type, range, help), so
the CLI never restates a default or a range.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from diffumnist.config import ConfigError, TrainConfig
from diffumnist.sampling.declarations import Setting, read_settings
from diffumnist.sampling.presets import PRESET_NAMES, PRESET_SUMMARIES, from_preset
from diffumnist.sampling.settings import SEED_RANGE, SETTING_NAMES, SETTINGS, SamplingConfig

_FLAG_TYPES = {"int": int, "float": float}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# `train NAME` for the two classifiers, named as their shipped files, and the role each
# trains (classifier.ROLES; a test checks that the two agree).
CLASSIFIER_COMMANDS = {"classifier": "judge", "filter": "filter"}
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


def count_int(high: int) -> Callable[[str], int]:
    """A flag type for a count: a whole number from 1 to `high`, bounded when parsed so that
    no later arithmetic sees an absurd one."""

    def count(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text!r}")
        return value

    return count


def port_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}")
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
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag type that reads 'none' as None (it switches a preset's value off)."""

    def parse_or_none(text: str) -> Any:
        return None if text == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__
    return parse_or_none


def timestep_interval(text: str) -> tuple[int, int]:
    """'LO,HI' -> (LO, HI); SamplingConfig checks the values themselves."""
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be two whole timesteps LO,HI such as 30,180; got {text!r}"
        ) from None
    return low, high


def _in_range(spec: Setting, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag type that parses with `parse`, then checks the setting's declared range."""

    def parse_checked(text: str) -> Any:
        value = parse(text)
        try:
            return spec.checked(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).split("; got")[0]) from None

    parse_checked.__name__ = parse.__name__
    return parse_checked


_SETTING_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "float": finite_float, "text": str, "interval": timestep_interval,
}  # fmt: skip


def _setting_flag(spec: Setting) -> dict[str, Any]:
    """argparse keywords for one sampling setting, from its declaration alone."""
    help_text = spec.help.replace("%", "%%")
    if spec.nullable and spec.meta.get("none"):
        help_text += f" none: {spec.meta['none']}."
    kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
    if spec.type == "bool":  # --clip-x0 / --no-clip-x0, so a preset's value can be undone
        kwargs["action"] = argparse.BooleanOptionalAction
    elif spec.type == "choice":
        kwargs["choices"] = spec.choices
    else:
        parse = _in_range(spec, _SETTING_PARSERS[spec.type])
        kwargs["type"] = _none_or(parse) if spec.nullable else parse
        metavar = {"interval": "LO,HI", "text": "NAME"}.get(spec.type, spec.type.upper())
        kwargs["metavar"] = f"none|{metavar}" if spec.nullable else metavar
    return kwargs


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, read from its declaration like the sampling flags."""
    for spec in read_settings(TrainConfig):
        if spec.name == "kind":
            continue
        help_text = spec.help
        if spec.default is not None:
            help_text += f" (default: {spec.default})"
        kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if spec.type == "choice":
            kwargs["choices"] = spec.choices
        else:
            kwargs["type"] = seed_int if spec.name == "seed" else _FLAG_TYPES[spec.type]
        parser.add_argument("--" + spec.name.replace("_", "-"), **kwargs)


def add_sampling_flags(
    parser: argparse.ArgumentParser, seed: int | None = None, preset: str = "recipe"
) -> None:
    """--preset and one flag per SamplingConfig setting; a flag given wins over the preset.

    seed None: the command fixes its own seeds and offers no --seed.
    """
    group = parser.add_argument_group(
        "sampling", "Settings default to the --preset's for the model's kind; any flag given "
        "overrides it ('none' switches a preset's value off).\n  " + "\n  ".join(
            f"{name} ({kind}): {summary}"
            for kind, summaries in PRESET_SUMMARIES.items() for name, summary in summaries.items()
        ),
    )  # fmt: skip
    group.add_argument(
        "--preset", choices=PRESET_NAMES, default=preset,
        help="named sampling settings (docs/quality.md: how they were chosen)",
    )  # fmt: skip
    for spec in SETTINGS:
        kwargs = _setting_flag(spec)
        if spec.name == "seed":
            if seed is None:
                continue
            kwargs["default"] = seed
        group.add_argument("--" + spec.name.replace("_", "-"), **kwargs)


def sampling_flags(settings: dict[str, Any]) -> str:
    """The flags that give these sampling settings, as `sampling_config` reads them back."""
    return " ".join(
        f"--{name.replace('_', '-')} "
        + (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        for name, value in settings.items()
    )


def sampling_config(args: argparse.Namespace, kind: str) -> SamplingConfig:
    """The flags' SamplingConfig for a model of `kind`: the preset, then the flags given."""
    given = {name: value for name, value in vars(args).items() if name in SETTING_NAMES}
    return from_preset(args.preset, kind, **given)


def add_nproc_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=help_text)


def version_text() -> str:
    try:
        return f"diffumnist {version('diffumnist')} (torch {version('torch')})"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "diffumnist (not installed)"
