"""Configuration dataclasses: the one place where defaults live.

`ModelConfig` travels inside every checkpoint so `load(path)` rebuilds the network and its
noise schedule with no flags (the nanoGPT habit). `TrainConfig` holds the recipe of
docs/recipe.md; `RECIPES` holds the values that differ by kind, `recipe(kind)` returns the
filled config, and the CLI's flags are generated from its fields, so a default is written once.

This module is the bottom layer: it imports nothing of the package. The kinds (kinds/) own
how each model behaves and register under the names `KindName` lists here.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Precision = Literal["auto", "fp32", "bf16"]
DeviceName = Literal["auto", "cpu", "cuda"]
BatchNormMode = Literal["global", "local"]
KindName = Literal["denoiser", "time", "class"]
KIND_NAMES: tuple[str, ...] = get_args(KindName)

# The recipe's values that differ by kind; lr_gamma None means 0.1**(1/epochs), a tenfold
# decay over the run. lr_final None: no cosine (the LR decays by lr_gamma per epoch).
_NO_FAST_SETTINGS = {
    "warmup_steps": 0, "lr_final": None, "min_snr_gamma": 0.0, "ema_decay": 0.0, "twin_epoch": 0,
}  # fmt: skip
_DDPM_RECIPE = {
    "hidden_dim": 64, "epochs": 20, "batch_size": 128, "lr": 1e-3, "lr_gamma": None,
    **_NO_FAST_SETTINGS,
}  # fmt: skip
_DENOISER_RECIPE = {
    "hidden_dim": 128, "epochs": 5, "batch_size": 256, "lr": 1e-4, "lr_gamma": 1.0,
    **_NO_FAST_SETTINGS,
}  # fmt: skip
RECIPES: dict[str, dict[str, Any]] = {
    "denoiser": _DENOISER_RECIPE,
    "time": _DDPM_RECIPE,
    "class": _DDPM_RECIPE,
}
# `--preset fast`: the recipe's network in minutes on a CPU (docs/training.md, chosen by
# benchmarks/time_to_quality.py): a linear LR warm-up, a cosine to the run's last step,
# min-SNR-γ loss weights and an EMA with warm-up. The batch is 32: four times the steps of
# batch 128 through the same images for 0.83x the images a second (class MNIST-FID 2.61
# against 3.88 in 4 epochs; time 7.51 in 5 epochs against 17.64 in 6 at batch 128). The
# peak LR is 3e-3: for the class model better than 2e-3 and as good as 4e-3, for the time
# model as good as 2e-3 (7.82 against 7.51 guided by the shipped twin). Without min-SNR-γ
# the class model's 3 epochs scored 4.24, not 2.95. A run keeps its own weak twin after
# epoch 1: it guides the time model better than the shipped twin (6.03 against 7.82), and
# takes the class model's 3 epochs from 3.03 to 2.81 (sampling.OWN_TWIN_GUIDANCE).
# The denoiser has no fast preset.
_DDPM_FAST = {
    **_DDPM_RECIPE, "epochs": 4, "batch_size": 32, "lr": 3e-3, "lr_gamma": 1.0,
    "warmup_steps": 200, "lr_final": 0.02, "min_snr_gamma": 5.0, "ema_decay": 0.999,
    "twin_epoch": 1,
}  # fmt: skip
TrainPreset = Literal["recipe", "fast"]
TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "recipe": RECIPES,
    "fast": {
        "time": {**_DDPM_FAST, "epochs": 5},
        "class": _DDPM_FAST,
    },
}


class ConfigError(ValueError):
    """A user-facing configuration mistake; the CLI prints it as one line and exits 2.

    `setting` names the setting at fault where there is one, so the page can mark its field.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise a ConfigError listing the valid values when `value` is not one of them."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def is_integer(value: object) -> bool:
    """True for ints and integer-likes (NumPy, 0-d tensors), False for floats and bools."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def is_number(value: object) -> bool:
    """True for finite ints and floats (not bools)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise a ConfigError unless `value` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}; got {value!r}")


def default_data_dir() -> Path:
    """The data setting: $DIFFUMNIST_DATA, else a per-user cache folder."""
    env = os.environ.get("DIFFUMNIST_DATA")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "diffumnist"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network and its diffusion schedule.

    The schedule fields are unused by the single-step denoiser but kept so every
    checkpoint has the same shape.
    """

    kind: KindName = "class"
    hidden_dim: int = 64
    num_classes: int = 10
    num_timesteps: int = 300
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KIND_NAMES)
        if not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ConfigError(f"hidden_dim must be a positive integer; got {self.hidden_dim!r}")
        if not isinstance(self.num_timesteps, int) or self.num_timesteps < 1:
            raise ConfigError(
                f"num_timesteps must be a positive integer; got {self.num_timesteps!r}"
            )
        check_positive("beta_start", self.beta_start)
        check_positive("beta_end", self.beta_end)
        if not self.beta_start <= self.beta_end < 1:
            raise ConfigError("betas must satisfy 0 < beta_start <= beta_end < 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**_known_fields(cls, data, "model config"))


def _known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """`data` checked to name only fields of the dataclass `cls` (a ConfigError otherwise)."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what} keys: {', '.join(sorted(unknown))}")
    return data


def _flag(help_text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    """A training run. `None` in a field means "the preset's value for this kind"."""

    kind: str = _flag("which model to train", "class")
    preset: TrainPreset = _flag(
        "named training settings that fill every field not given: recipe (docs/recipe.md) or "
        "fast (minutes on a CPU: docs/training.md)",
        "recipe",
    )
    hidden_dim: int | None = _flag("hidden channels D of the UNet (recipe: 128 denoiser, 64 DDPMs)")
    epochs: int | None = _flag("passes over the training split (recipe: 5 denoiser, 20 DDPMs)")
    batch_size: int | None = _flag("images per step (recipe: 256 denoiser, 128 DDPMs; fast: 32)")
    lr: float | None = _flag("Adam learning rate (recipe: 1e-4 denoiser, 1e-3 DDPMs)")
    lr_gamma: float | None = _flag(
        "ExponentialLR factor per epoch (recipe: 1 denoiser, 0.1**(1/epochs) DDPMs)"
    )
    sigma: float = _flag("noise level of the single-step denoiser", 0.5)
    p_uncond: float = _flag("probability of dropping the class (classifier-free guidance)", 0.1)
    num_timesteps: int = _flag("diffusion steps T", 300)
    beta_start: float = _flag("first beta of the linear schedule", 1e-4)
    beta_end: float = _flag("last beta of the linear schedule", 0.02)
    ema_decay: float | None = _flag(
        "keep an EMA copy of the weights with decay β, warmed up as min(β, (1+s)/(10+s)) after "
        "s steps (0 = off; recipe: 0, fast: 0.999)"
    )
    warmup_steps: int | None = _flag(
        "raise the LR linearly over the first N optimizer steps, at most a fifth of the run "
        "(recipe: 0, fast: 200)"
    )
    lr_final: float | None = _flag(
        "decay the LR per step along a cosine to lr*LR_FINAL at the run's last step, instead "
        "of lr_gamma per epoch (recipe: off, fast: 0.02)"
    )
    min_snr_gamma: float | None = _flag(
        "weight the loss at each t by min(SNR, γ)/SNR (min-SNR-γ, Hang et al. 2023; 0 = off; "
        "recipe: 0, fast: 5)"
    )
    twin_epoch: int | None = _flag(
        "after this epoch keep the weights (the EMA where there is one) as twin.safetensors "
        "in the run folder: a weak twin to guide the finished model with (autoguidance, "
        "--guide RUN/twin.safetensors); 0 = none, and none if the run ends by then (recipe: "
        "0, fast: 1)"
    )
    seed: int = _flag("seed for initialisation, shuffling and noise", 0)
    subset: int | None = _flag("train on only the first N training images (quick runs)")
    max_steps: int | None = _flag("stop after this many optimizer steps (quick runs)")
    precision: Precision = _flag("auto = bf16 autocast where the hardware has it", "auto")
    device: DeviceName = _flag("where to train", "auto")
    preview_every: int = _flag("save a small sample grid every N epochs (0 = never)", 1)
    eval_every: int = _flag("score a few samples with the judge every N epochs (0 = never)", 0)
    eval_n: int = _flag("samples per evaluation during training", 300)
    batchnorm: BatchNormMode = _flag(
        "with several processes: BatchNorm statistics over the global batch (as on one "
        "process) or each process's local share (cheaper, but a different run)",
        "global",
    )

    def resolved(self) -> TrainConfig:
        """Fill the preset's values for the kind where a field is None, and validate; a new
        config."""
        check_choice("kind", self.kind, KIND_NAMES)
        check_choice("preset", self.preset, get_args(TrainPreset))
        if self.kind not in TRAIN_PRESETS[self.preset]:
            raise ConfigError(f"the {self.kind} model has no {self.preset} training preset")
        recipe = TRAIN_PRESETS[self.preset][self.kind]
        filled = {
            name: getattr(self, name) if getattr(self, name) is not None else default
            for name, default in recipe.items()
        }
        if filled["lr_gamma"] is None:  # a tenfold decay over the run
            filled["lr_gamma"] = 0.1 ** (1 / max(filled["epochs"], 1))
        resolved = dataclasses.replace(self, **filled)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        check_choice("precision", self.precision, get_args(Precision))
        check_choice("device", self.device, get_args(DeviceName))
        check_choice("batchnorm", self.batchnorm, get_args(BatchNormMode))
        for name in ("hidden_dim", "epochs", "batch_size", "num_timesteps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        for name in ("warmup_steps", "twin_epoch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0; got {value!r}")
        if self.lr_final is not None:
            check_positive("lr_final", self.lr_final)
        check_positive("min_snr_gamma", self.min_snr_gamma, allow_zero=True)
        for name in ("subset", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        for name in ("preview_every", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0; got {value!r}")
        if not isinstance(self.eval_n, int) or self.eval_n < 10:
            raise ConfigError(f"eval_n must be an integer >= 10; got {self.eval_n!r}")
        check_positive("lr", self.lr)
        check_positive("lr_gamma", self.lr_gamma)
        check_positive("sigma", self.sigma, allow_zero=True)
        check_positive("p_uncond", self.p_uncond, allow_zero=True)
        check_positive("ema_decay", self.ema_decay, allow_zero=True)
        if self.p_uncond > 1 or self.ema_decay >= 1 or (self.lr_final or 0) > 1:
            raise ConfigError("p_uncond and lr_final must be <= 1 and ema_decay < 1")
        self.model_config()

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            kind=self.kind,
            hidden_dim=self.hidden_dim,
            num_timesteps=self.num_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**_known_fields(cls, data, "training config"))


def recipe(kind: str) -> TrainConfig:
    """The SPEC.md recipe for one of the three models, fully resolved."""
    return TrainConfig(kind=kind).resolved()
