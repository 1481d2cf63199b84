"""Trained models as users hold them: a network plus what it needs to be used.

`DiffusionModel` pairs a time- or class-conditioned UNet with its noise schedule and
offers the call users know from the original project:

    samples, animation = model.sample(c, img_wh=(28, 28), guidance_scale=5.0, seed=42)

`sample` reads a `preset` and keyword settings (any field of `SamplingConfig`) into a
`SamplingConfig`; `generate` takes one directly, which is how the CLI, the page, evaluation
and the figures call it. Both run the sampling pipeline (sampling/pipeline.py). `Denoiser`
wraps the single-step UNet. `load(path)` rebuilds either from a checkpoint with no flags,
because the checkpoint carries its ModelConfig.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffumnist.checkpoint import CheckpointError, load_checkpoint
from diffumnist.config import ConfigError, ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.kinds import build_net, get_kind, load_net
from diffumnist.runtime import autocast, resolve_precision
from diffumnist.sampling import NOT_GIVEN, SamplingConfig, StepCallback, from_preset, generate


class DiffusionModel(nn.Module):
    """A time- or class-conditioned DDPM ready to sample."""

    def __init__(self, config: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        self.kind = get_kind(config.kind)
        if not self.kind.samples:
            raise ConfigError(f"a {config.kind} checkpoint cannot sample; use Denoiser")
        self.config = config
        self.net = net if net is not None else build_net(config)
        device = next(self.net.parameters()).device
        self.diffusion = GaussianDiffusion.from_config(config).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def sample(
        self,
        c: torch.Tensor | Sequence[int] | None = None,
        img_wh: tuple[int, int] = (28, 28),
        guidance_scale: float = NOT_GIVEN,
        seed: int = NOT_GIVEN,
        *,
        n: int | None = None,
        preset: str = "recipe",
        frame_every: int = 1,
        callback: StepCallback | None = None,
        **settings: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate images with the `preset`'s settings (default: the recipe: DDPM, all T
        steps, γ = 5 at every step, seed 0); any setting given wins, and None switches a
        preset's value off (e.g. `preset="fast", guide=None`).

        c: digits (N,) for the class model; the time model takes `n` instead.
        settings: any field of SamplingConfig by name (sampler, steps, eta, spacing,
        guidance_interval, guide, start, clip_x0, reject_below, precision, …); its help
        text says what each does and `diffumnist sample --help` lists them.
        Returns (samples float (N, 1, H, W) clamped to [0, 1] on the CPU,
        animation uint8 (F, N, H, W): x_T, then x_t after every `frame_every`-th step
        and always the final x_0). Same seed, same samples, on the same machine.
        """
        config = from_preset(
            preset, self.config.kind, guidance_scale=guidance_scale, seed=seed, **settings
        )
        return self.generate(
            c, config, n=n, img_wh=img_wh, frame_every=frame_every, callback=callback
        )

    def generate(
        self,
        c: torch.Tensor | Sequence[int] | None,
        config: SamplingConfig,
        *,
        n: int | None = None,
        img_wh: tuple[int, int] = (28, 28),
        frame_every: int = 1,
        callback: StepCallback | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample` with its settings in one SamplingConfig; same arguments and results."""
        return generate(
            self, c, config, n=n, img_wh=img_wh, frame_every=frame_every, callback=callback
        )


class Denoiser(nn.Module):
    """The single-step denoiser D(z) ≈ x, trained at one noise level σ."""

    def __init__(self, config: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        self.kind = get_kind(config.kind)
        if self.kind.samples:
            raise ConfigError(f"a {config.kind} checkpoint is not a single-step denoiser")
        self.config = config
        self.net = net if net is not None else build_net(config)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.inference_mode()
    def denoise(self, noisy: torch.Tensor, precision: str = "auto") -> torch.Tensor:
        """noisy (N, 1, 28, 28) -> denoised (N, 1, 28, 28), unclamped, on the input's device."""
        self.net.eval()
        with autocast(self.device, resolve_precision(precision, self.device)):
            return self.net(noisy.to(self.device)).float().to(noisy.device)


def model_for(config: ModelConfig, net: nn.Module | None = None) -> DiffusionModel | Denoiser:
    """The user-facing model of `config`'s kind around `net` (a fresh network if None)."""
    model_class = DiffusionModel if get_kind(config.kind).samples else Denoiser
    return model_class(config, net)


def model_from_weights(
    config: ModelConfig, weights: dict[str, torch.Tensor]
) -> DiffusionModel | Denoiser:
    """Build the user-facing model for `config` and load `weights` into its network."""
    return model_for(config, load_net(config, weights)).eval()


def load(path: Path | str, use_ema: bool = True) -> DiffusionModel | Denoiser:
    """Rebuild a model from a checkpoint file; EMA weights are used when present."""
    ckpt = load_checkpoint(path)
    if ckpt.model_config is None:
        raise CheckpointError(f"{path} holds no diffusion model (the MNIST judge, perhaps)")
    weights = ckpt.ema_weights if use_ema and ckpt.ema_weights is not None else ckpt.weights
    return model_from_weights(ckpt.model_config, weights)
