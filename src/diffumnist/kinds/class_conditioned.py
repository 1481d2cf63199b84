"""The recipe's class-conditioned DDPM, trained for classifier-free guidance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from diffumnist.config import ConfigError
from diffumnist.kinds.base import Draws, ModelKind
from diffumnist.nets import ClassConditionalUNet

if TYPE_CHECKING:
    from diffumnist.config import ModelConfig, TrainConfig
    from diffumnist.diffusion import GaussianDiffusion


def digits_to_onehot(c: object, num_classes: int = 10) -> torch.Tensor:
    """Digits (N,) -> one-hot float (N, num_classes); rejects anything outside 0..9."""
    try:
        digits = torch.as_tensor(c).reshape(-1)
    except (ValueError, TypeError, RuntimeError) as exc:  # e.g. 2**70 overflows int64
        raise ConfigError(f"digits must be whole numbers 0-9 ({exc})") from None
    if digits.is_floating_point() and not bool((digits == digits.round()).all()):
        raise ConfigError("digits must be whole numbers 0-9")
    digits = digits.long()
    if digits.numel() == 0 or bool(((digits < 0) | (digits >= num_classes)).any()):
        raise ConfigError(f"digits must lie in 0-{num_classes - 1}; got {digits.tolist()}")
    return F.one_hot(digits, num_classes).float()


class ClassConditioned(ModelKind):
    """Like the time model, plus a one-hot digit that is dropped (zeroed) with p_uncond."""

    name = "class"
    conditional = True

    def build_net(self, config: ModelConfig) -> nn.Module:
        return ClassConditionalUNet(config.hidden_dim, num_classes=config.num_classes)

    def draw(self, n: int, generator: torch.Generator, diffusion: GaussianDiffusion,
             config: TrainConfig) -> Draws:  # fmt: skip
        """Class dropout first, then t and ε (the order every checkpoint was made with)."""
        keep = torch.rand(n, generator=generator) >= config.p_uncond
        return {"keep": keep, **super().draw(n, generator, diffusion, config)}

    def condition_for_training(self, labels: torch.Tensor, draws: Draws) -> torch.Tensor:
        return F.one_hot(labels, 10).float() * draws["keep"].float()[:, None]

    def condition(self, c: object, n: int | None, num_classes: int) -> tuple[torch.Tensor, int]:
        if c is None:
            raise ConfigError("the class model needs digits c, e.g. torch.tensor([5])")
        onehot = digits_to_onehot(c, num_classes)
        return onehot, onehot.shape[0]
