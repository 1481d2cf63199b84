"""The sampling pipeline: from a request to pixels, around a network and its solver.

`generate` is what `model.sample` and `model.generate` run: it checks the request's size,
loads the guide, draws x_T (from noise, or over the mean digit), wraps the network in its
guidance, runs the solver in the chosen precision while it records the frames, refuses a
diverged result, and redraws what the filter cannot read (rejection sampling).

Where sampling starts (`start="mean"`): the recipe's schedule ends at ᾱ_T = 0.048, so x_T
keeps √ᾱ_T = 0.22 of the image ("signal leak", Everaert et al. 2024); x_T = √ᾱ_T·μ +
√(1 − ᾱ_T)·z from μ, the digit's mean training image, is the forward process from the
Gaussian closest to the data (docs/quality.md measures it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from diffumnist.checkpoint import CheckpointError, load_checkpoint, shipped_weights
from diffumnist.classifier import filter_confidence
from diffumnist.config import ConfigError, ModelConfig
from diffumnist.data import shipped_mean_images, to_uint8
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.inference import inference_net
from diffumnist.kinds import ModelKind, load_net
from diffumnist.runtime import autocast, resolve_precision
from diffumnist.sampling.guidance import make_eps_fn
from diffumnist.sampling.limits import check_memory, image_size
from diffumnist.sampling.settings import MAX_DRAWS, SamplingConfig
from diffumnist.sampling.solvers import StepCallback, StepInfo, get_sampler
from diffumnist.sampling.timesteps import visited_timesteps


class DiffusionModel(Protocol):
    """What the pipeline needs of a model (models.DiffusionModel): its kind, config, network,
    schedule and device."""

    kind: ModelKind
    config: ModelConfig
    net: nn.Module
    diffusion: GaussianDiffusion

    @property
    def device(self) -> torch.device: ...


# `guide="weak"`: the shipped weights/<kind>_weak.safetensors (MODEL_CARD: how it was made).
WEAK_GUIDE = "weak"


def mean_images(onehot: torch.Tensor | None, count: int, size: tuple[int, int]) -> torch.Tensor:
    """The mean MNIST training image of each requested digit (of all digits without one),
    (count, 1, H, W), resized bilinearly when H x W is not 28 x 28."""
    means = shipped_mean_images()
    if onehot is None:
        images = means[-1:].expand(count, -1, -1, -1)
    else:
        images = torch.einsum("nd,dchw->nchw", onehot.cpu().float(), means[:-1])
    if size != (28, 28):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


def load_guide(guide: str, config: ModelConfig) -> nn.Module:
    """The network a `guide` setting names for a model of `config` (on the CPU): "weak", the
    shipped weak twin of that kind, or a checkpoint path.

    A guide must be a diffusion model of the same kind, classes and noise schedule; its
    width may differ (Karras et al. guide with smaller, shorter-trained networks).
    """
    if guide == WEAK_GUIDE:
        path = shipped_weights(f"{config.kind}_weak")
        if not path.exists():
            raise ConfigError(
                f"no weak twin ships for the {config.kind} model; give a checkpoint", "guide"
            )
    else:
        path = Path(guide).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read guide {guide}: {exc.strerror}", "guide") from None
    guide_config, net = _load_guide(path, stat.st_mtime_ns, stat.st_size)
    if dataclasses.replace(guide_config, hidden_dim=config.hidden_dim) != config:
        raise ConfigError(
            f"guide {guide} is a {guide_config.kind} model with T={guide_config.num_timesteps}; "
            f"it must match the model it guides ({config.kind}, T={config.num_timesteps}, "
            f"the same schedule and classes)",
            "guide",
        )
    return net


@functools.lru_cache(maxsize=4)
def _load_guide(path: Path, mtime_ns: int, size: int) -> tuple[ModelConfig, nn.Module]:
    """A guide's config and network (EMA weights if any), kept while the file is unchanged:
    evaluation samples batch by batch."""
    ckpt = load_checkpoint(path)
    if ckpt.model_config is None:
        raise CheckpointError(f"{path} holds no diffusion model", "guide")
    weights = ckpt.ema_weights if ckpt.ema_weights is not None else ckpt.weights
    return ckpt.model_config, load_net(ckpt.model_config, weights)


@dataclass
class _Drawer:
    """Draws digits for one request, all from its one generator, recording their frames."""

    model: DiffusionModel
    config: SamplingConfig
    net: nn.Module
    guide_net: nn.Module | None
    timesteps: list[int]
    generator: torch.Generator
    size: tuple[int, int]  # (height, width)
    frame_every: int
    callback: StepCallback | None

    def __call__(
        self,
        onehot: torch.Tensor | None,
        count: int,
        draw: int = 0,
        slots: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` digits from fresh noise: x0 (count, 1, H, W) on the CPU and the frames."""
        model, config, device = self.model, self.config, self.model.device
        x_T = torch.randn((count, 1, *self.size), generator=self.generator).to(device)
        if config.start == "mean":
            x0_mean = mean_images(onehot, count, self.size).to(device)
            x_T = model.diffusion.q_sample(x0_mean, model.diffusion.num_timesteps, x_T)
        eps_fn = make_eps_fn(
            self.net,
            model.diffusion,
            onehot,
            float(config.guidance_scale),
            config.guidance_interval,
            self.guide_net,
            config.clip_x0,
        )
        frames = [to_uint8(x_T)]

        def record(info: StepInfo) -> None:
            if (info.step + 1) % self.frame_every == 0 or info.step + 1 == info.num_steps:
                frames.append(to_uint8(info.x_prev))
            if self.callback is not None:
                self.callback(dataclasses.replace(info, draw=draw, slots=slots) if draw else info)

        knobs = {} if config.sampler == "ddpm" else {"eta": config.eta}
        with autocast(device, resolve_precision(config.precision, device)):
            x0 = get_sampler(config.sampler)(
                eps_fn, x_T, model.diffusion, self.timesteps, self.generator, record, **knobs
            )
        if not bool(torch.isfinite(x0).all()):
            raise ConfigError(
                f"sampling diverged to non-finite values at guidance_scale="
                f"{config.guidance_scale!r}; use a smaller guidance scale (the recipe's is 5)",
                "guidance_scale",
            )
        return x0.float().clamp(0, 1).cpu(), torch.stack(frames)


@torch.inference_mode()
def generate(
    model: DiffusionModel,
    c: torch.Tensor | Sequence[int] | None,
    config: SamplingConfig,
    *,
    n: int | None = None,
    img_wh: tuple[int, int] = (28, 28),
    frame_every: int = 1,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (N, 1, H, W) in [0, 1] on the CPU and the animation uint8 (F, N, H, W):
    x_T, x_t after every `frame_every`-th step and always the final x0. With `reject_below`
    the animation follows the draw kept for each digit, so its last frame is the sample."""
    onehot, count = model.kind.condition(c, n, model.config.num_classes)
    width, height = image_size(img_wh)
    config.check(model.diffusion.num_timesteps, (width, height))
    timesteps = visited_timesteps(config, model.diffusion)
    check_memory(count, (width, height), len(timesteps), frame_every)
    guide_net = None
    if config.guide is not None:
        guide_net = inference_net(load_guide(config.guide, model.config)).to(model.device)
    drawer = _Drawer(
        model,
        config,
        inference_net(model.net),
        guide_net,
        timesteps,
        torch.Generator().manual_seed(config.seed),
        (height, width),
        frame_every,
        callback,
    )
    if onehot is not None:
        onehot = onehot.to(model.device)
    samples, animation = drawer(onehot, count)
    if config.reject_below is not None:
        _redraw_illegible(samples, animation, onehot, config.reject_below, drawer)
    return samples, animation


def _redraw_illegible(
    samples: torch.Tensor,
    animation: torch.Tensor,
    onehot: torch.Tensor | None,
    threshold: float,
    drawer: _Drawer,
) -> None:
    """Rejection sampling, in place: redraw every digit the filter reads below `threshold`
    (as its requested digit, or without `onehot` as any digit), up to MAX_DRAWS draws in
    all, keeping each digit's most legible draw and its animation."""
    digits = None if onehot is None else onehot.argmax(1).cpu()
    legibility = filter_confidence(samples, digits)
    for draw in range(1, MAX_DRAWS):
        redo = (legibility < threshold).nonzero().flatten()
        if len(redo) == 0:
            return
        part = None if onehot is None else onehot[redo.to(onehot.device)]
        redrawn, redrawn_frames = drawer(part, len(redo), draw, redo)
        wanted = None if digits is None else digits[redo]
        redrawn_legibility = filter_confidence(redrawn, wanted)
        better = redrawn_legibility > legibility[redo]
        samples[redo[better]] = redrawn[better]
        animation[:, redo[better]] = redrawn_frames[:, better]
        legibility[redo[better]] = redrawn_legibility[better]
