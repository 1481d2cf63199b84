"""Trained models as users hold them: a network plus what it needs to be used.

`DiffusionModel` pairs a time- or class-conditioned UNet with its noise schedule and
offers the call users know from the original project:

    samples, animation = model.sample(c, img_wh=(28, 28), guidance_scale=5.0, seed=42)

`Denoiser` wraps the single-step UNet. `load(path)` rebuilds either from a checkpoint with
no flags, because the checkpoint carries its ModelConfig.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from diffumnist.checkpoint import CheckpointError, load_checkpoint
from diffumnist.config import ConfigError, ModelConfig
from diffumnist.data import to_uint8
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.nets import build_net
from diffumnist.runtime import autocast, resolve_precision
from diffumnist.sampling import (
    StepCallback,
    StepInfo,
    check_sampler_args,
    get_sampler,
    make_eps_fn,
)

MAX_SAMPLES_PER_CALL = 10_000
# torch.Generator.manual_seed takes any integer in this range and raises ValueError outside it.
SEED_RANGE = range(-(2**63), 2**64)
# The animation is kept in memory as uint8; past this a request must take fewer frames.
MAX_FRAME_BYTES = 2**30


def _is_integer(value: object) -> bool:
    """True for ints and integer-likes (NumPy, 0-d tensors), False for floats and the rest."""
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _image_size(img_wh: object) -> tuple[int, int]:
    """(width, height) checked to be two whole multiples of 28 (the UNet's 7x7 bottleneck)."""
    try:
        width, height = img_wh  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(f"img_wh must be a (width, height) pair; got {img_wh!r}") from None
    if not (_is_integer(width) and _is_integer(height)):
        raise ConfigError(f"img_wh must be whole numbers; got {img_wh!r}")
    width, height = operator.index(width), operator.index(height)
    if width < 28 or height < 28 or width % 28 or height % 28:
        raise ConfigError(f"img_wh must be multiples of 28 (the UNet's 7x7 bottleneck): {img_wh}")
    return width, height


def digits_to_onehot(c: torch.Tensor | Sequence[int] | int, num_classes: int = 10) -> torch.Tensor:
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
    return nn.functional.one_hot(digits, num_classes).float()


class DiffusionModel(nn.Module):
    """A time- or class-conditioned DDPM ready to sample."""

    def __init__(self, config: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        if config.kind == "denoiser":
            raise ConfigError("a denoiser checkpoint cannot sample; use Denoiser")
        self.config = config
        self.net = net if net is not None else build_net(config)
        device = next(self.net.parameters()).device
        self.diffusion = GaussianDiffusion.from_config(config).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _condition(self, c, n: int | None) -> tuple[torch.Tensor | None, int]:
        """Check the request; return (one-hot classes or None, number of samples)."""
        if self.config.kind == "class":
            if c is None:
                raise ConfigError("the class model needs digits c, e.g. torch.tensor([5])")
            onehot = digits_to_onehot(c, self.config.num_classes)
            return onehot.to(self.device), onehot.shape[0]
        if c is not None and n is None:
            n = int(torch.as_tensor(c).numel())  # the time model ignores which digits
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"the number of samples n must be a positive integer; got {n!r}")
        return None, n

    @torch.inference_mode()
    def sample(
        self,
        c: torch.Tensor | Sequence[int] | None = None,
        img_wh: tuple[int, int] = (28, 28),
        guidance_scale: float = 5.0,
        seed: int = 0,
        *,
        n: int | None = None,
        precision: str = "fp32",
        frame_every: int = 1,
        callback: StepCallback | None = None,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate images from pure noise; the recipe's DDPM sampler unless `sampler` says.

        c: digits (N,) for the class model; the time model takes `n` instead.
        sampler: ddpm (all T steps), ddim or dpmpp (`steps` <= T; None picks
        sampling.DEFAULT_STEPS); `eta` in [0, 1] is DDIM's noise (0 = deterministic).
        Returns (samples float (N, 1, H, W) clamped to [0, 1] on the CPU,
        animation uint8 (F, N, H, W): x_T, then x_t after every `frame_every`-th step
        and always the final x_0). Same seed, same samples, on the same machine.
        """
        onehot, count = self._condition(c, n)
        width, height = _image_size(img_wh)
        # the memory bound counts 28x28 tiles, so larger images mean fewer samples
        tiles = count * (width // 28) * (height // 28)
        if tiles > MAX_SAMPLES_PER_CALL:
            raise ConfigError(
                f"at most {MAX_SAMPLES_PER_CALL} samples of 28x28 per call (fewer when larger); "
                f"got {count} of {width}x{height}"
            )
        if not _is_integer(seed) or operator.index(seed) not in SEED_RANGE:
            raise ConfigError(f"seed must be an integer in [-2**63, 2**64); got {seed!r}")
        if not isinstance(guidance_scale, int | float) or not math.isfinite(guidance_scale):
            raise ConfigError(f"guidance_scale must be a finite number; got {guidance_scale!r}")
        if not _is_integer(frame_every) or frame_every < 1:
            raise ConfigError(f"frame_every must be an integer >= 1; got {frame_every!r}")
        precision = resolve_precision(precision, self.device)
        num_steps = check_sampler_args(sampler, steps, eta, self.diffusion.num_timesteps)
        frame_bytes = (num_steps // frame_every + 2) * tiles * 28 * 28
        if frame_bytes > MAX_FRAME_BYTES:
            raise ConfigError(
                f"the animation would take {frame_bytes / 2**30:.1f} GiB; ask for fewer "
                f"samples or a larger frame_every (at most {MAX_FRAME_BYTES / 2**30:.0f} GiB)"
            )

        self.net.eval()
        generator = torch.Generator().manual_seed(operator.index(seed))
        x_T = torch.randn((count, 1, height, width), generator=generator).to(self.device)
        eps_fn = make_eps_fn(self.net, self.diffusion, onehot, float(guidance_scale))
        frames = [to_uint8(x_T)]

        def record(info: StepInfo) -> None:
            if (info.step + 1) % frame_every == 0 or info.step + 1 == info.num_steps:
                frames.append(to_uint8(info.x_prev))
            if callback is not None:
                callback(info)

        with autocast(self.device, precision):
            x0 = get_sampler(sampler)(
                eps_fn, x_T, self.diffusion, generator, record, steps=steps, eta=eta
            )
        if not bool(torch.isfinite(x0).all()):
            raise ConfigError(
                f"sampling diverged to non-finite values at guidance_scale={guidance_scale!r}; "
                "use a smaller guidance scale (the recipe's is 5)"
            )
        return x0.float().clamp(0, 1).cpu(), torch.stack(frames)


class Denoiser(nn.Module):
    """The single-step denoiser D(z) ≈ x, trained at one noise level σ."""

    def __init__(self, config: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        if config.kind != "denoiser":
            raise ConfigError(f"a {config.kind} checkpoint is not a single-step denoiser")
        self.config = config
        self.net = net if net is not None else build_net(config)

    @torch.inference_mode()
    def denoise(self, noisy: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """noisy (N, 1, 28, 28) -> denoised (N, 1, 28, 28), unclamped, on the input's device."""
        self.net.eval()
        device = next(self.net.parameters()).device
        with autocast(device, precision):
            return self.net(noisy.to(device)).float().to(noisy.device)


def model_from_weights(
    config: ModelConfig, weights: dict[str, torch.Tensor]
) -> DiffusionModel | Denoiser:
    """Build the user-facing model for `config` and load `weights` into its network."""
    model = Denoiser(config) if config.kind == "denoiser" else DiffusionModel(config)
    try:
        model.net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
        )
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit a {config.kind} model: {first_line}") from exc
    return model.eval()


def load(path: Path | str, use_ema: bool = True) -> DiffusionModel | Denoiser:
    """Rebuild a model from a checkpoint file; EMA weights are used when present."""
    ckpt = load_checkpoint(path)
    weights = ckpt.ema_weights if use_ema and ckpt.ema_weights is not None else ckpt.weights
    return model_from_weights(ckpt.model_config, weights)
