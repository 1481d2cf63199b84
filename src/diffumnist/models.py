"""Trained models as users hold them: a network plus what it needs to be used.

`DiffusionModel` pairs a time- or class-conditioned UNet with its noise schedule and
offers the call users know from the original project:

    samples, animation = model.sample(c, img_wh=(28, 28), guidance_scale=5.0, seed=42)

`sample` reads keyword settings (and a `preset`) into a `SamplingConfig`; `generate` takes
one directly, which is how the CLI, the UI, evaluation and the figures call it. `Denoiser`
wraps the single-step UNet. `load(path)` rebuilds either from a checkpoint with no flags,
because the checkpoint carries its ModelConfig.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffumnist.batchnorm import remeasure_running_statistics
from diffumnist.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    shipped_weights,
)
from diffumnist.classifier import filter_confidence
from diffumnist.config import ConfigError, ModelConfig, TrainConfig, is_integer, recipe
from diffumnist.data import load_split, shipped_mean_images, to_uint8, to_unit
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.inference import inference_net
from diffumnist.kinds import build_net, get_kind
from diffumnist.runtime import autocast, resolve_precision
from diffumnist.sampling import (
    MAX_DRAWS,
    SamplingConfig,
    StepCallback,
    StepInfo,
    get_sampler,
    make_eps_fn,
)

MAX_SAMPLES_PER_CALL = 10_000
# `guide="weak"`: the shipped weights/<kind>_weak.safetensors (MODEL_CARD: how it was made).
WEAK_GUIDE = "weak"
# Images per batch when BatchNorm statistics are measured afresh (remeasure_batchnorm).
REMEASURE_BATCH_SIZE = 512
# The animation is kept in memory as uint8; past this a request must take fewer frames.
MAX_FRAME_BYTES = 2**30


def _image_size(img_wh: object) -> tuple[int, int]:
    """(width, height) checked to be two whole multiples of 28 (the UNet's 7x7 bottleneck)."""
    try:
        width, height = img_wh  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(f"img_wh must be a (width, height) pair; got {img_wh!r}") from None
    if not (is_integer(width) and is_integer(height)):
        raise ConfigError(f"img_wh must be whole numbers; got {img_wh!r}")
    width, height = operator.index(width), operator.index(height)
    if width < 28 or height < 28 or width % 28 or height % 28:
        raise ConfigError(f"img_wh must be multiples of 28 (the UNet's 7x7 bottleneck): {img_wh}")
    return width, height


def _mean_images(onehot: torch.Tensor | None, count: int, size: tuple[int, int]) -> torch.Tensor:
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
        guidance_scale: float | None = None,
        seed: int | None = None,
        *,
        n: int | None = None,
        preset: str = "recipe",
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        spacing: str | None = None,
        guidance_interval: tuple[int, int] | None = None,
        guide: str | None = None,
        start: str | None = None,
        clip_x0: bool | None = None,
        reject_below: float | EllipsisType | None = ...,
        precision: str | None = None,
        frame_every: int = 1,
        callback: StepCallback | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate images from pure noise with the `preset`'s settings (default: the recipe:
        DDPM, all T steps, γ = 5 at every step, seed 0); any setting given here wins.

        c: digits (N,) for the class model; the time model takes `n` instead.
        sampler: ddpm (all T steps), ddim or dpmpp (`steps` <= T; None: the preset's, or the
        sampler's default); `eta` in [0, 1] is their noise (0 = deterministic); spacing:
        "trailing" (evenly in t) or "logsnr" (evenly in log-SNR, see SamplingConfig);
        guidance_interval (lo, hi): γ only for lo < t <= hi; guide: "weak" or a checkpoint
        path makes γ autoguidance, away from that weaker model (the time model's only
        guidance), instead of classifier-free guidance; start: "noise" (x_T ~ N(0, I))
        or "mean" (x_T from the digit's mean image, see SamplingConfig); clip_x0: clamp each
        step's x̂0 to [0, 1]; reject_below: redraw digits the shipped filter reads below this
        probability (None keeps every draw; the default `...` keeps the preset's).
        Returns (samples float (N, 1, H, W) clamped to [0, 1] on the CPU,
        animation uint8 (F, N, H, W): x_T, then x_t after every `frame_every`-th step
        and always the final x_0). Same seed, same samples, on the same machine.
        """
        given = {
            "guidance_scale": guidance_scale, "seed": seed, "sampler": sampler, "steps": steps,
            "eta": eta, "spacing": spacing, "guidance_interval": guidance_interval,
            "guide": guide, "start": start, "clip_x0": clip_x0, "precision": precision,
        }  # fmt: skip
        given = {k: v for k, v in given.items() if v is not None}
        if reject_below is not ...:  # None is a value here: it turns a preset's threshold off
            given["reject_below"] = reject_below
        config = SamplingConfig.from_preset(preset, self.config.kind, **given)
        return self.generate(c, config, n=n, img_wh=img_wh, frame_every=frame_every,
                             callback=callback)  # fmt: skip

    def remeasure_batchnorm(
        self,
        data_dir: Path | str | None = None,
        batches: int = 100,
        batch_size: int = REMEASURE_BATCH_SIZE,
        seed: int = 0,
        train_config: TrainConfig | None = None,
    ) -> None:
        """Measure the BatchNorm running statistics afresh for the weights held now, on
        `batches` random training batches drawn as `train_config`'s training drew them
        (random t and ε, the class dropped with its p_uncond; default: the recipe's); see
        batchnorm.remeasure_running_statistics for why EMA weights need it.

        In fp32, so the statistics do not depend on the machine's bf16 support;
        deterministic for a seed. The network is left in eval mode.
        """
        images, labels = load_split("train", data_dir)
        device = self.device
        train_config = train_config or recipe(self.config.kind)
        generator = torch.Generator().manual_seed(seed)

        def forward() -> None:
            index = torch.randint(len(images), (batch_size,), generator=generator)
            draws = self.kind.draw(batch_size, generator, self.diffusion, train_config)
            draws = {name: value.to(device) for name, value in draws.items()}
            x0 = to_unit(images[index]).to(device)
            self.kind.loss(self.net, x0, labels[index].to(device), draws, self.diffusion,
                           train_config)  # fmt: skip

        remeasure_running_statistics(self.net, forward, batches)
        self.net.eval()

    @torch.inference_mode()
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
        onehot, count = self.kind.condition(c, n, self.config.num_classes)
        width, height = _image_size(img_wh)
        # the memory bound counts 28x28 tiles, so larger images mean fewer samples
        tiles = count * (width // 28) * (height // 28)
        if tiles > MAX_SAMPLES_PER_CALL:
            raise ConfigError(
                f"at most {MAX_SAMPLES_PER_CALL} samples of 28x28 per call (fewer when larger); "
                f"got {count} of {width}x{height}"
            )
        if not is_integer(frame_every) or frame_every < 1:
            raise ConfigError(f"frame_every must be an integer >= 1; got {frame_every!r}")
        precision = resolve_precision(config.precision, self.device)
        num_steps = config.num_steps(self.diffusion.num_timesteps)
        frame_bytes = (num_steps // frame_every + 2) * tiles * 28 * 28
        if frame_bytes > MAX_FRAME_BYTES:
            raise ConfigError(
                f"the animation would take {frame_bytes / 2**30:.1f} GiB; ask for fewer "
                f"samples or a larger frame_every (at most {MAX_FRAME_BYTES / 2**30:.0f} GiB)"
            )

        if config.reject_below is not None and (width, height) != (28, 28):
            raise ConfigError(
                f"reject_below reads 28x28 digits only (the filter's size); got img_wh {img_wh} "
                "(reject_below=None keeps every draw)"
            )

        net = inference_net(self.net)  # BatchNorm folded, channels_last: same function, faster
        generator = torch.Generator().manual_seed(config.seed)
        if onehot is not None:
            onehot = onehot.to(self.device)
        guide_net = None
        if config.guide is not None:
            guide = guide_model(config.guide, self.config)
            guide_net = inference_net(guide.net).to(self.device)

        def draw(
            onehot: torch.Tensor | None, count: int, index: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """`count` digits from fresh noise of the one generator: x0 on the CPU, frames."""
            x_T = torch.randn((count, 1, height, width), generator=generator).to(self.device)
            if config.start == "mean":
                x_T = self.diffusion.q_sample(
                    _mean_images(onehot, count, (height, width)).to(self.device),
                    self.diffusion.num_timesteps, x_T,
                )  # fmt: skip
            eps_fn = make_eps_fn(net, self.diffusion, onehot, float(config.guidance_scale),
                                 config.guidance_interval, guide_net, config.clip_x0)  # fmt: skip
            frames = [to_uint8(x_T)]

            def record(info: StepInfo) -> None:
                if (info.step + 1) % frame_every == 0 or info.step + 1 == info.num_steps:
                    frames.append(to_uint8(info.x_prev))
                if callback is not None:
                    callback(dataclasses.replace(info, draw=index) if index else info)

            with autocast(self.device, precision):
                x0 = get_sampler(config.sampler)(
                    eps_fn, x_T, self.diffusion, generator, record, steps=num_steps,
                    eta=config.eta, spacing=config.spacing,
                )  # fmt: skip
            if not bool(torch.isfinite(x0).all()):
                raise ConfigError(
                    f"sampling diverged to non-finite values at guidance_scale="
                    f"{config.guidance_scale!r}; use a smaller guidance scale (the recipe's is 5)"
                )
            return x0.float().clamp(0, 1).cpu(), torch.stack(frames)

        samples, animation = draw(onehot, count, 0)
        if config.reject_below is not None:
            _redraw_illegible(samples, animation, onehot, config.reject_below, draw)
        return samples, animation


def _redraw_illegible(
    samples: torch.Tensor,
    animation: torch.Tensor,
    onehot: torch.Tensor | None,
    threshold: float,
    draw: Callable[[torch.Tensor | None, int, int], tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Rejection sampling, in place: redraw every digit the filter reads below `threshold`
    (as its requested digit, or without `onehot` as any digit), up to MAX_DRAWS draws in
    all, keeping each digit's most legible draw and its animation. `draw(onehot, count,
    index)` makes `count` new digits from the caller's generator."""
    digits = None if onehot is None else onehot.argmax(1).cpu()
    legibility = filter_confidence(samples, digits)
    for index in range(1, MAX_DRAWS):
        redo = (legibility < threshold).nonzero().flatten()
        if len(redo) == 0:
            return
        part = None if onehot is None else onehot[redo.to(onehot.device)]
        redrawn, redrawn_frames = draw(part, len(redo), index)
        wanted = None if digits is None else digits[redo]
        redrawn_legibility = filter_confidence(redrawn, wanted)
        better = redrawn_legibility > legibility[redo]
        samples[redo[better]] = redrawn[better]
        animation[:, redo[better]] = redrawn_frames[:, better]
        legibility[redo[better]] = redrawn_legibility[better]


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
    model = model_for(config)
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
    if ckpt.model_config is None:
        raise CheckpointError(f"{path} holds no diffusion model (the MNIST judge, perhaps)")
    weights = ckpt.ema_weights if use_ema and ckpt.ema_weights is not None else ckpt.weights
    return model_from_weights(ckpt.model_config, weights)


def export_weights(
    source: Path | str,
    target: Path | str,
    *,
    use_ema: bool = True,
    half: bool = False,
    remeasure_batches: int = 0,
    data_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Write a weights-only checkpoint (no optimizer or RNG state) for sampling or shipping;
    returns the metadata written, which records each choice.

    From a training checkpoint, `use_ema` picks the EMA weights (refused if the run kept
    none) or the raw ones; a weights-only file has one set, kept as it is. Floats are stored
    in fp16 if `half` (loaded back as fp32), else fp32. `remeasure_batches` > 0 measures a
    diffusion model's BatchNorm statistics afresh on that many training batches, drawn as
    the run's training drew them (DiffusionModel.remeasure_batchnorm), before writing.
    """
    ckpt = load_checkpoint(source)
    meta = {**ckpt.meta, "storage": "fp16" if half else "fp32"}
    weights = ckpt.weights
    if ckpt.optimizer is not None or ckpt.ema_weights is not None:  # a training checkpoint
        if use_ema and ckpt.ema_weights is None:
            raise CheckpointError(f"{source} holds no EMA weights (--ema-decay 0); use --raw")
        weights = ckpt.ema_weights if use_ema else ckpt.weights
        meta["ema"] = use_ema
    elif not use_ema:
        raise ConfigError(f"{source} holds weights only, one set; --raw picks from a run")
    if remeasure_batches:
        if ckpt.model_config is None or not get_kind(ckpt.model_config.kind).samples:
            raise ConfigError("only time and class models have BatchNorm statistics to remeasure")
        model = model_from_weights(ckpt.model_config, weights)
        train = ckpt.meta.get("train")
        model.remeasure_batchnorm(
            data_dir,
            remeasure_batches,
            train_config=TrainConfig.from_dict(train) if train else None,
        )
        weights = model.net.state_dict()
        meta["batchnorm_remeasured"] = {
            "batches": remeasure_batches, "batch_size": REMEASURE_BATCH_SIZE, "precision": "fp32",
        }  # fmt: skip
    cast = torch.float16 if half else torch.float32
    weights = {k: v.to(cast) if v.is_floating_point() else v for k, v in weights.items()}
    save_checkpoint(target, Checkpoint(ckpt.model_config, weights, meta=meta))
    return meta


def guide_model(guide: str, config: ModelConfig) -> DiffusionModel:
    """The guide a `guide` setting names for a model of `config` (on the CPU):
    "weak", the shipped weak twin of the shipped model of that kind, or a checkpoint path.

    A guide must be a diffusion model of the same kind, classes and noise schedule; its
    width may differ (Karras et al. guide with smaller, shorter-trained networks).
    """
    if guide == WEAK_GUIDE:
        path = shipped_weights(f"{config.kind}_weak")
        if not path.exists():
            raise ConfigError(f"no weak twin ships for the {config.kind} model; give a checkpoint")
    else:
        path = Path(guide).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read guide {guide}: {exc.strerror}") from None
    model = _load_guide(path, stat.st_mtime_ns, stat.st_size)
    if dataclasses.replace(model.config, hidden_dim=config.hidden_dim) != config:
        raise ConfigError(
            f"guide {guide} is a {model.config.kind} model with T={model.config.num_timesteps}; "
            f"it must match the model it guides ({config.kind}, T={config.num_timesteps}, "
            f"the same schedule and classes)"
        )
    return model


@functools.lru_cache(maxsize=4)
def _load_guide(path: Path, mtime_ns: int, size: int) -> DiffusionModel | Denoiser:
    """`load(path)`, kept while the file is unchanged: evaluation samples batch by batch."""
    return load(path)
