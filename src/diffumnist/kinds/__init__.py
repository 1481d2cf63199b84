"""Model kinds: everything that differs between the three models lives in one object each.

A kind owns its network, how a training batch's randomness is drawn,
its loss, its per-epoch preview and how a sampling request is read. Training, sampling,
evaluation and the CLI ask the kind instead of branching on its name, so a new kind (say
v-prediction) is one new module, one line in `KINDS`, and its name and recipe values in
config (`KindName`, `RECIPES`), the bottom layer that every other module may import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffumnist.checkpoint import CheckpointError
from diffumnist.config import KIND_NAMES, check_choice
from diffumnist.kinds.base import ModelKind
from diffumnist.kinds.class_conditioned import ClassConditioned
from diffumnist.kinds.denoiser import SingleStepDenoiser
from diffumnist.kinds.time_conditioned import TimeConditioned

if TYPE_CHECKING:
    import torch
    from torch import nn

    from diffumnist.config import ModelConfig

KINDS: dict[str, ModelKind] = {
    kind.name: kind for kind in (SingleStepDenoiser(), TimeConditioned(), ClassConditioned())
}


def build_net(config: ModelConfig) -> nn.Module:
    """The network a ModelConfig describes, freshly initialised."""
    return get_kind(config.kind).build_net(config)


def load_net(config: ModelConfig, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The network `config` describes with `weights` loaded (as fp32), in eval mode."""
    net = build_net(config)
    try:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
        )
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit a {config.kind} model: {first_line}") from exc
    return net.eval()


def get_kind(name: str) -> ModelKind:
    """The kind called `name`; a ConfigError lists the valid names otherwise."""
    check_choice("kind", name, KIND_NAMES)
    return KINDS[name]


__all__ = ["KINDS", "KIND_NAMES", "ModelKind", "build_net", "get_kind", "load_net"]
