"""The only sampling loops.

Every sampler is a free function with one signature (k-diffusion's habit):

    sampler(eps_fn, x_T, diffusion, generator, callback=None, *, steps=None, eta=0.0) -> x0

`eps_fn(x_t, t)` returns ε_θ for integer timesteps t (N,), already guided if guidance is
wanted (see `make_eps_fn`). `callback(StepInfo)` fires once per step; pictures, GIFs and the
UI hang off it, so no sampler knows about them. `SAMPLERS` maps each name to its function:

- ddpm: the recipe's Algorithm 2, all T steps (the default everywhere);
- ddim: Song et al. (2021), any number of steps <= T, `eta` from 0 (deterministic) to 1;
- dpmpp: DPM-Solver++(2M) of Lu et al. (2022), data prediction, any number of steps <= T.

Step spacing ("trailing", Lin et al. 2024, Table 2): S steps visit t_i = round((S − i)·T/S)
for i = 0 … S−1, then land on t = 0 where ᾱ_0 = 1. The first step is always t = T, where
x_T ~ N(0, I) belongs; S = T visits every timestep. diffusers' `timestep_spacing="trailing"`
gives the same steps, shifted by one (its k is our t − 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import torch
from torch import nn

from diffumnist.config import ConfigError, check_choice
from diffumnist.diffusion import GaussianDiffusion

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SamplerName = Literal["ddpm", "ddim", "dpmpp"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
# Steps used when a fast sampler gets steps=None (capped at T); ddpm always runs T.
DEFAULT_STEPS: dict[str, int] = {"ddim": 50, "dpmpp": 20}


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after each step. Tensors are (N, 1, H, W)."""

    step: int  # 0-based index of this step
    num_steps: int
    t: int  # the timestep that was denoised (T ... 1)
    x_t: torch.Tensor  # the input of this step
    x0_pred: torch.Tensor  # x̂0 predicted from x_t
    x_prev: torch.Tensor  # the output: x at the next (smaller) timestep


StepCallback = Callable[[StepInfo], None]


def make_eps_fn(
    net: nn.Module,
    diffusion: GaussianDiffusion,
    class_onehot: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> EpsFn:
    """Wrap a network as ε_θ(x_t, t), with classifier-free guidance for the class model.

    ε = ε_u + γ·(ε_c − ε_u), ε_u from the zero class vector. Both branches run in one
    batched forward pass; γ = 1 needs only ε_c and γ = 0 only ε_u, so those skip the other.
    """
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite; got {guidance_scale}")

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frac = diffusion.time_fraction(t)
        if class_onehot is None:
            return net(x_t, frac).float()
        if guidance_scale == 1.0:
            return net(x_t, frac, class_onehot).float()
        uncond = torch.zeros_like(class_onehot)
        if guidance_scale == 0.0:
            return net(x_t, frac, uncond).float()
        both = net(
            torch.cat([x_t, x_t]), torch.cat([frac, frac]), torch.cat([class_onehot, uncond])
        )
        eps_cond, eps_uncond = both.float().chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return eps_fn


def check_sampler_args(name: str, steps: int | None, eta: float, num_timesteps: int) -> int:
    """Validate a sampler request; return the number of steps it will take.

    Raises ConfigError with the valid values, so the CLI and the UI can show it as one line.
    """
    check_choice("sampler", name, SAMPLER_NAMES)
    if not isinstance(eta, int | float) or isinstance(eta, bool) or not 0 <= eta <= 1:
        raise ConfigError(f"eta must be a number in [0, 1]; got {eta!r}")
    if eta != 0 and name != "ddim":
        raise ConfigError(f"eta applies only to the ddim sampler; got eta={eta} for {name}")
    if name == "ddpm":
        if steps not in (None, num_timesteps):
            raise ConfigError(
                f"ddpm always takes all T={num_timesteps} steps; steps must be None or "
                f"{num_timesteps} (ddim and dpmpp take fewer); got {steps!r}"
            )
        return num_timesteps
    if steps is None:
        return min(DEFAULT_STEPS[name], num_timesteps)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= num_timesteps:
        raise ConfigError(f"steps must be an integer in 1..{num_timesteps}; got {steps!r}")
    return steps


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Trailing spacing: t_i = round((S − i)·T/S), i = 0 … S−1, halves to even (as NumPy).

    The spacing between visited timesteps is T/S >= 1, so rounding keeps them distinct.
    """
    return [round((steps - i) * num_timesteps / steps) for i in range(steps)]


class Sampler(Protocol):
    """The signature every sampler shares."""

    def __call__(
        self,
        eps_fn: EpsFn,
        x_T: torch.Tensor,
        diffusion: GaussianDiffusion,
        generator: torch.Generator,
        callback: StepCallback | None = None,
        *,
        steps: int | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor: ...


def _alphas_cumprod(diffusion: GaussianDiffusion) -> list[float]:
    """ᾱ_t for t = 0 … T as Python floats (ᾱ_0 = 1), so per-step scalars need no device sync."""
    return [1.0, *diffusion.alphas_cumprod.double().cpu().tolist()]


def _timestep_batch(x_t: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)


def _standard_normal(x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One N(0, I) draw shaped like x_t, drawn on the generator's device (device-independent)."""
    return torch.randn(x_t.shape, generator=generator, device=generator.device).to(x_t)


@torch.inference_mode()
def ddpm_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    generator: torch.Generator,
    callback: StepCallback | None = None,
    *,
    steps: int | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Algorithm 2 of Ho et al.: T ancestral steps from x_T ~ N(0, I) to x0 (N, 1, H, W).

    `steps` must be None or T and `eta` 0; they exist so every sampler shares one signature.
    """
    num_steps = check_sampler_args("ddpm", steps, eta, diffusion.num_timesteps)
    x_t = x_T
    for step, t in enumerate(range(num_steps, 0, -1)):
        eps = eps_fn(x_t, _timestep_batch(x_t, t))
        noise = _standard_normal(x_t, generator)
        x_prev, x0_pred = diffusion.p_sample_step(x_t, t, eps, noise)
        if callback is not None:
            callback(StepInfo(step, num_steps, t, x_t, x0_pred, x_prev))
        x_t = x_prev
    return x_t


@torch.inference_mode()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    generator: torch.Generator,
    callback: StepCallback | None = None,
    *,
    steps: int | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) on `steps` trailing timesteps, x_T (N, 1, H, W) to x0.

    Eq. (12): x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s − σ²)·ε + σ·z for the next timestep s < t, with
    Eq. (16): σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s). η = 0 draws no noise at all;
    η = 1 with steps = T has variance β̃_t (the posterior's), not the recipe's β_t.
    """
    num_steps = check_sampler_args("ddim", steps, eta, diffusion.num_timesteps)
    timesteps = spaced_timesteps(diffusion.num_timesteps, num_steps)
    alphas_cumprod = _alphas_cumprod(diffusion)
    x_t = x_T
    for step, (t, s) in enumerate(zip(timesteps, [*timesteps[1:], 0], strict=True)):
        eps = eps_fn(x_t, _timestep_batch(x_t, t))
        x0_pred = diffusion.predict_x0_from_eps(x_t, t, eps)
        a_t, a_s = alphas_cumprod[t], alphas_cumprod[s]
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        direction = math.sqrt(max(1 - a_s - sigma**2, 0.0))  # "direction pointing to x_t"
        x_prev = math.sqrt(a_s) * x0_pred + direction * eps
        if eta > 0:
            x_prev = x_prev + sigma * _standard_normal(x_t, generator)
        if callback is not None:
            callback(StepInfo(step, num_steps, t, x_t, x0_pred, x_prev))
        x_t = x_prev
    return x_t


def _half_log_snr(alpha_cumprod: float) -> float:
    """λ_t = log(α_t/σ_t) with α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) (Lu et al. 2022, Section 2)."""
    return 0.5 * math.log(alpha_cumprod / (1 - alpha_cumprod))


@torch.inference_mode()
def dpmpp_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    generator: torch.Generator,
    callback: StepCallback | None = None,
    *,
    steps: int | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DPM-Solver++(2M), Algorithm 2 of Lu et al. (2022, arXiv:2211.01095), on trailing steps.

    It solves the diffusion ODE in the data prediction x̂0 and λ = log(α/σ). From t to the
    next timestep s, with h = λ_s − λ_t:  x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·D, where
    D = x̂0_t on the first step (the 1st-order update, i.e. DDIM) and afterwards the
    multistep correction D = (1 + 1/(2r))·x̂0_t − 1/(2r)·x̂0_prev with r = h_prev/h.
    The last step lands on σ_0 = 0, where the update is exactly x̂0_t (h = ∞), as in
    diffusers. Deterministic: `generator` is unused, and `eta` must be 0.
    """
    num_steps = check_sampler_args("dpmpp", steps, eta, diffusion.num_timesteps)
    timesteps = spaced_timesteps(diffusion.num_timesteps, num_steps)
    alphas_cumprod = _alphas_cumprod(diffusion)
    x_t, x0_prev, h_prev = x_T, None, None
    for step, (t, s) in enumerate(zip(timesteps, [*timesteps[1:], 0], strict=True)):
        eps = eps_fn(x_t, _timestep_batch(x_t, t))
        x0_pred = diffusion.predict_x0_from_eps(x_t, t, eps)
        if s == 0:
            x_next = x0_pred
        else:
            a_t, a_s = alphas_cumprod[t], alphas_cumprod[s]
            h = _half_log_snr(a_s) - _half_log_snr(a_t)
            data = x0_pred
            if x0_prev is not None:
                half_inv_r = 0.5 * h / h_prev
                data = (1 + half_inv_r) * x0_pred - half_inv_r * x0_prev
            x_next = math.sqrt((1 - a_s) / (1 - a_t)) * x_t - math.sqrt(a_s) * math.expm1(-h) * data
            x0_prev, h_prev = x0_pred, h
        if callback is not None:
            callback(StepInfo(step, num_steps, t, x_t, x0_pred, x_next))
        x_t = x_next
    return x_t


SAMPLERS: dict[str, Sampler] = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpmpp": dpmpp_sample}


def get_sampler(name: str) -> Sampler:
    """The sampler called `name`; a ConfigError lists the valid names otherwise."""
    check_choice("sampler", name, SAMPLER_NAMES)
    return SAMPLERS[name]
