"""Checkpoints as single safetensors files: no pickles, written atomically.

One file holds everything: the model config and run metadata (JSON in the safetensors
header), the weights (`model.*`), the optional EMA weights (`ema.*`), and, for training
checkpoints, the optimizer state (`optim.*`), LR scheduler state and the training RNG
state. Loading it can never run code, and a file is either the old one or the new one:
it is written to a temporary file, fsynced, then renamed over the target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from diffumnist.config import ConfigError, ModelConfig
from diffumnist.files import write_atomic

FORMAT = "diffumnist/1"
# What a checkpoint (a file from anywhere) may ask us to allocate: far above the recipe's
# D=128, T=300, far below an out-of-memory kill.
MAX_HIDDEN_DIM = 1024
MAX_NUM_TIMESTEPS = 100_000
# First bytes of formats that unpickle on load (torch.save's zip, a raw pickle), checked only
# after safetensors parsing failed, to say why such a file is refused.
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, corrupt or of the wrong kind."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file. Only `model_config` and `weights` are required.

    `model_config` is None for a network that is not one of the diffusion kinds (the judge).
    """

    model_config: ModelConfig | None
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None  # torch optimizer state_dict
    scheduler: dict[str, Any] | None = None  # torch LR scheduler state_dict (JSON-able)
    rng_state: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, step, train config, ...


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in rest["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def check_model_size(config: ModelConfig) -> None:
    """Refuse configs whose network or schedule alone would exhaust memory."""
    if config.hidden_dim > MAX_HIDDEN_DIM or config.num_timesteps > MAX_NUM_TIMESTEPS:
        raise CheckpointError(
            f"hidden_dim must be <= {MAX_HIDDEN_DIM} and num_timesteps <= {MAX_NUM_TIMESTEPS}; "
            f"got {config.hidden_dim} and {config.num_timesteps}"
        )


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def _strip(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def save_checkpoint(path: Path | str, ckpt: Checkpoint) -> None:
    """Serialise `ckpt` to one safetensors file, atomically."""
    tensors = _prefixed("model.", ckpt.weights)
    model_config = ckpt.model_config.to_dict() if ckpt.model_config is not None else None
    header: dict[str, Any] = {"model_config": model_config, "meta": ckpt.meta}
    if ckpt.ema_weights is not None:
        tensors.update(_prefixed("ema.", ckpt.ema_weights))
    if ckpt.optimizer is not None:
        optim_tensors, header["optimizer"] = _flatten_optimizer(ckpt.optimizer)
        tensors.update(_prefixed("", optim_tensors))
    if ckpt.scheduler is not None:
        header["scheduler"] = ckpt.scheduler
    if ckpt.rng_state is not None:
        tensors["rng_state"] = ckpt.rng_state.cpu().contiguous()
    metadata = {"format": FORMAT, "header": json.dumps(header)}
    write_atomic(Path(path), save_bytes(tensors, metadata=metadata))


def _read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ (the library's loader drops it)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__") or {}


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; any problem is a CheckpointError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        metadata = _read_metadata(data)
        tensors = load_bytes(data)
        if metadata.get("format") != FORMAT:
            raise ValueError("not a DiffuMNIST checkpoint")
        header = json.loads(metadata["header"])
        model_config = None
        if header["model_config"] is not None:
            model_config = ModelConfig.from_dict(header["model_config"])
            check_model_size(model_config)
        optimizer = None
        if header.get("optimizer") is not None:
            optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
            optimizer = _unflatten_optimizer(optim_tensors, header["optimizer"])
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if data.startswith(_PICKLE_MAGICS):
            raise CheckpointError(
                f"{path} looks like a pickle (torch.save) file; DiffuMNIST never unpickles, "
                "since that can run arbitrary code; load only .safetensors checkpoints"
            ) from exc
        raise CheckpointError(f"{path} is not a valid DiffuMNIST checkpoint ({exc})") from exc
    return Checkpoint(
        model_config=model_config,
        weights=_strip("model.", tensors),
        ema_weights=_strip("ema.", tensors) or None,
        optimizer=optimizer,
        scheduler=header.get("scheduler"),
        rng_state=tensors.get("rng_state"),
        meta=header.get("meta", {}),
    )


def shipped_weights(name: str) -> Path:
    """The file `weights/<name>.safetensors` inside the installed package."""
    return Path(str(resources.files("diffumnist") / "weights" / f"{name}.safetensors"))
