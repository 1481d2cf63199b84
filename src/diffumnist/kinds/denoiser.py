"""The recipe's single-step denoiser: D(x + σ·ε) ≈ x at one noise level σ, no schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from diffumnist.config import ConfigError
from diffumnist.data import add_noise, load_split, to_unit
from diffumnist.kinds.base import PREVIEW_SEED, Draws, ModelKind
from diffumnist.nets import UnconditionalUNet

if TYPE_CHECKING:
    from diffumnist.config import ModelConfig, TrainConfig
    from diffumnist.diffusion import GaussianDiffusion


class SingleStepDenoiser(ModelKind):
    name = "denoiser"
    samples = False

    def build_net(self, config: ModelConfig) -> nn.Module:
        return UnconditionalUNet(config.hidden_dim)

    def draw(self, n: int, generator: torch.Generator, diffusion: GaussianDiffusion,
             config: TrainConfig) -> Draws:  # fmt: skip
        return {"noise": torch.randn((n, 1, 28, 28), generator=generator)}

    def loss(self, net: nn.Module, x0: torch.Tensor, labels: torch.Tensor, draws: Draws,
             diffusion: GaussianDiffusion, config: TrainConfig) -> torch.Tensor:  # fmt: skip
        """L2 between the clean digit and the denoised x0 + σ·ε."""
        return F.mse_loss(net(x0 + config.sigma * draws["noise"]).float(), x0)

    def preview(self, model: nn.Module, config: TrainConfig, precision: str,
                data_dir: Any) -> dict[str, torch.Tensor]:  # fmt: skip
        """Eight test digits: clean, noised at the trained σ, denoised (fp32)."""
        device = next(model.net.parameters()).device
        clean = to_unit(load_split("test", data_dir)[0][:8]).to(device)
        noisy = add_noise(clean, config.sigma, torch.Generator().manual_seed(PREVIEW_SEED))
        return {"clean": clean, "noisy": noisy, "denoised": model.denoise(noisy, "fp32")}

    def condition(self, c: object, n: int | None, num_classes: int) -> tuple[None, int]:
        raise ConfigError("a denoiser checkpoint cannot sample; use Denoiser")
