"""The recipe's time-conditioned DDPM: unconditional digits from pure noise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from diffumnist.kinds.base import ModelKind
from diffumnist.nets import TimeConditionalUNet

if TYPE_CHECKING:
    from diffumnist.config import ModelConfig


class TimeConditioned(ModelKind):
    name = "time"

    def build_net(self, config: ModelConfig) -> nn.Module:
        return TimeConditionalUNet(config.hidden_dim)
