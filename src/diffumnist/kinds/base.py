"""What every model kind answers; the defaults fit the two DDPM kinds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from diffumnist.config import ConfigError
from diffumnist.diffusion import GaussianDiffusion

if TYPE_CHECKING:
    from diffumnist.config import ModelConfig, TrainConfig

Draws = dict[str, torch.Tensor]
PREVIEW_SEED = 1234


class ModelKind:
    """One kind of model. Stateless: a single instance per kind lives in `KINDS`."""

    name: ClassVar[str]
    samples: ClassVar[bool] = True  # generates images from pure noise
    conditional: ClassVar[bool] = False  # takes the digits to draw

    def build_net(self, config: ModelConfig) -> nn.Module:
        """The network a ModelConfig of this kind describes, freshly initialised."""
        raise NotImplementedError

    def draw(self, n: int, generator: torch.Generator, diffusion: GaussianDiffusion,
             config: TrainConfig) -> Draws:  # fmt: skip
        """The randomness of one global batch of n images, from the run's CPU generator.

        Every rank draws the whole batch and keeps its share, so the generator advances
        alike for any number of ranks; the order of the draws is part of the checkpoint.
        """
        return {
            "t": diffusion.sample_timesteps(n, generator),
            "noise": torch.randn((n, 1, 28, 28), generator=generator),
        }

    def loss(self, net: nn.Module, x0: torch.Tensor, labels: torch.Tensor, draws: Draws,
             diffusion: GaussianDiffusion, config: TrainConfig) -> torch.Tensor:  # fmt: skip
        """The training objective on one batch x0 (N, 1, 28, 28): Algorithm 1's ε-MSE."""
        c = self.condition_for_training(labels, draws)
        return diffusion.training_loss(
            net, x0, draws["t"], draws["noise"], c, min_snr_gamma=config.min_snr_gamma
        )

    def condition_for_training(self, labels: torch.Tensor, draws: Draws) -> torch.Tensor | None:
        return None

    def preview(self, model: nn.Module, config: TrainConfig, precision: str,
                data_dir: Any) -> dict[str, torch.Tensor]:  # fmt: skip
        """A small fixed-seed sample set drawn after an epoch (what the epoch figures show).

        `model` is the user-facing model around the raw weights (see models.model_for).
        """
        digits = torch.arange(10).repeat_interleave(4)
        c, n = (digits, None) if self.conditional else (None, 40)
        samples, frames = model.sample(
            c, n=n, seed=PREVIEW_SEED, precision=precision, frame_every=10
        )
        # the process of the first sample of each digit, every 10th step
        return {"samples": samples, "labels": digits, "frames": frames[:, ::4]}

    def condition(
        self, c: object, n: int | None, num_classes: int
    ) -> tuple[torch.Tensor | None, int]:
        """Read a sampling request: (one-hot classes or None, number of samples)."""
        if c is not None and n is None:
            n = int(torch.as_tensor(c).numel())  # the time model ignores which digits
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"the number of samples n must be a positive integer; got {n!r}")
        return None, n
