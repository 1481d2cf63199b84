"""Reading a settings dataclass: each field's type, default and metadata become a `Setting`.

The type decides everything a surface needs: `Literal[...]` is a choice, bool a switch,
int and float numbers (with optional `min`/`max` metadata), str a name, `tuple[int, int]`
an interval, and `X | None` admits None. `Setting.checked` validates a value against the
declaration alone; `Setting.describe` is what the page builds its control from.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import typing
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, get_args, get_origin

from diffumnist.config import ConfigError, check_choice, is_integer, is_number


class _NotGiven:
    """The one sentinel for "not given": the preset's value stands."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


@dataclass(frozen=True)
class Setting:
    """One field of SamplingConfig, read from its declaration: what every surface needs."""

    name: str
    type: str  # choice, bool, int, float, text or interval
    default: Any
    help: str
    nullable: bool
    choices: tuple[Any, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.meta.get("label") or self.name.replace("_", " ").capitalize()

    @property
    def samplers(self) -> tuple[str, ...]:
        return tuple(self.meta.get("samplers", ()))

    def shown(self, value: Any) -> str:
        """How describe() writes a value other than the default."""
        shown = self.meta.get("shown")
        if isinstance(shown, dict):
            return shown.get(value, f"{self.name} = {value}")
        if value is None:
            return f"{self.name} = none"
        return shown.format(value) if shown else f"{self.name} = {value}"

    def describe(self) -> dict[str, Any]:
        """The setting as the page builds its control from it (JSON)."""
        low, high = self.meta.get("min"), self.meta.get("max")
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "help": self.help,
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
            "nullable": self.nullable,
            "none_label": self.meta.get("none"),
            "choices": list(self.choices) if self.choices else None,
            "min": low,
            "max": high,
            "exclusive": bool(self.meta.get("exclusive")),
            "samplers": list(self.samplers) or None,
            "refs": list(self.meta.get("refs", [])),
        }

    def checked(self, value: Any) -> Any:
        """`value` checked against the declaration alone, in its canonical form."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{self.name} needs a value; got none", self.name)
        if self.type == "choice":
            try:
                check_choice(self.name, value, self.choices)
            except ConfigError as exc:
                raise ConfigError(str(exc), self.name) from None
            return value
        if self.type == "bool":
            return self._expect(isinstance(value, bool), value, "true or false")
        if self.type == "interval":
            return self._interval(value)
        if self.type == "text":
            value = os.fspath(value) if isinstance(value, os.PathLike) else value
            return self._expect(isinstance(value, str) and value.strip(), value, "a name")
        whole = self.type == "int"
        self._expect(
            is_integer(value) if whole else is_number(value),
            value,
            "a whole number" if whole else "a finite number",
        )
        value = operator.index(value) if whole else value
        return self._in_range(value)

    def _in_range(self, value: float) -> float:
        low, high, open_ = self.meta.get("min"), self.meta.get("max"), self.meta.get("exclusive")
        below = low is not None and (value <= low if open_ else value < low)
        above = high is not None and (value >= high if open_ else value > high)
        if below or above:
            if low is not None and high is not None:
                span = f"strictly between {low} and {high}" if open_ else f"from {low} to {high}"
            else:
                span = f"{'above' if open_ else 'at least'} {low}"
            raise ConfigError(f"{self.name} must be {span}; got {value!r}", self.name)
        return value

    def _expect(self, ok: Any, value: Any, what: str) -> Any:
        if not ok:
            raise ConfigError(f"{self.name} must be {what}; got {value!r}", self.name)
        return value

    def _interval(self, value: Any) -> tuple[int, int]:
        """(lo, hi) with 0 <= lo < hi, as whole timesteps."""
        try:
            low, high = value
        except (TypeError, ValueError):
            low = high = None
        ok = is_integer(low) and is_integer(high) and 0 <= low < high
        self._expect(ok, value, "two whole timesteps LO < HI with LO >= 0")
        return operator.index(low), operator.index(high)


def _setting_of(spec: dataclasses.Field, annotation: Any) -> Setting:
    """Read one field's declaration: its type decides the control, the flag and the check."""
    args = get_args(annotation)
    nullable = get_origin(annotation) in (typing.Union, UnionType) and type(None) in args
    if nullable:
        (annotation,) = [arg for arg in args if arg is not type(None)]
    if get_origin(annotation) is Literal:
        kind, choices = "choice", get_args(annotation)
    else:
        names = {bool: "bool", int: "int", float: "float", str: "text"}
        kind, choices = names.get(annotation, "interval"), None
        if kind == "interval" and get_origin(annotation) is not tuple:
            raise TypeError(f"SamplingConfig.{spec.name}: no control for {annotation!r}")
    meta = {k: v for k, v in spec.metadata.items() if k != "help"}
    return Setting(spec.name, kind, spec.default, spec.metadata["help"], nullable, choices, meta)


def read_settings(config_class: type) -> tuple[Setting, ...]:
    """Every field of the dataclass `config_class`, read from its declaration."""
    hints = typing.get_type_hints(config_class)
    return tuple(_setting_of(f, hints[f.name]) for f in dataclasses.fields(config_class))
