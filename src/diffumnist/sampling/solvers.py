"""The only sampling loops: three solvers with one signature (k-diffusion's habit).

    solver(eps_fn, x_T, diffusion, timesteps, generator, callback=None, **knobs) -> x0

`eps_fn(x_t, t)` returns ε_θ for the integer timestep t, already guided (guidance.py);
`timesteps` is the list the solver visits, from T down (timesteps.py); `callback(StepInfo)`
fires once per step, so pictures, GIFs and the page hang off it and no solver knows of them.
Each solver takes only its own knobs: ddim and dpmpp take `eta`, ddpm none.

- ddpm: the recipe's Algorithm 2 of Ho et al. (2020), an ancestral step from every t to t − 1;
- ddim: Song et al. (2021), any timesteps, `eta` from 0 (deterministic) to 1;
- dpmpp: DPM-Solver++(2M) of Lu et al. (2022), data prediction; `eta` > 0 makes it the
  stochastic DPM-Solver++(2M) SDE (η = 1 is diffusers' `sde-dpmsolver++`), which re-injects
  noise and so corrects the ODE's accumulated errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from diffumnist.config import check_choice
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling.settings import SAMPLER_NAMES
from diffumnist.sampling.timesteps import all_timesteps, alphas_cumprod_list, half_log_snr

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class StepInfo:
    """What a solver reports after each step. Tensors are (N, 1, H, W)."""

    step: int  # 0-based index of this step
    num_steps: int
    t: int  # the timestep that was denoised (T ... 1)
    x_t: torch.Tensor  # the input of this step
    x0_pred: torch.Tensor  # x̂0 predicted from x_t
    x_prev: torch.Tensor  # the output: x at the next (smaller) timestep
    draw: int = 0  # 0 for the first draw, k for the k-th redraw of rejected digits
    slots: torch.Tensor | None = None  # a redraw's positions in the batch (None: all)


StepCallback = Callable[[StepInfo], None]


class Solver(Protocol):
    """The signature every solver shares; knobs are keywords of the solvers that take them."""

    def __call__(
        self,
        eps_fn: EpsFn,
        x_T: torch.Tensor,
        diffusion: GaussianDiffusion,
        timesteps: Sequence[int],
        generator: torch.Generator,
        callback: StepCallback | None = None,
        **knobs: float,
    ) -> torch.Tensor: ...


def _standard_normal(x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One N(0, I) draw shaped like x_t, drawn on the generator's device (device-independent)."""
    return torch.randn(x_t.shape, generator=generator, device=generator.device).to(x_t)


@torch.inference_mode()
def ddpm_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    timesteps: Sequence[int],
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Algorithm 2 of Ho et al.: ancestral steps t → t − 1 for every t = T … 1, x_T to x0
    (N, 1, H, W). `timesteps` must be all of them: the posterior q(x_{t−1} | x_t, x0) steps
    by one."""
    if list(timesteps) != all_timesteps(diffusion.num_timesteps):
        raise ValueError(f"ddpm visits every timestep T … 1 (T = {diffusion.num_timesteps})")
    x_t = x_T
    for step, t in enumerate(timesteps):
        eps = eps_fn(x_t, t)
        noise = _standard_normal(x_t, generator)
        x_prev, x0_pred = diffusion.p_sample_step(x_t, t, eps, noise)
        if callback is not None:
            callback(StepInfo(step, len(timesteps), t, x_t, x0_pred, x_prev))
        x_t = x_prev
    return x_t


@torch.inference_mode()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    timesteps: Sequence[int],
    generator: torch.Generator,
    callback: StepCallback | None = None,
    *,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) over `timesteps`, then to t = 0: x_T (N, 1, H, W) to x0.

    Eq. (12): x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s − σ²)·ε + σ·z for the next timestep s < t, with
    Eq. (16): σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s). η = 0 draws no noise at all;
    η = 1 over every timestep has variance β̃_t (the posterior's), not the recipe's β_t.
    """
    alphas_cumprod = alphas_cumprod_list(diffusion)
    x_t = x_T
    for step, (t, s) in enumerate(zip(timesteps, [*timesteps[1:], 0], strict=True)):
        eps = eps_fn(x_t, t)
        x0_pred = diffusion.predict_x0_from_eps(x_t, t, eps)
        a_t, a_s = alphas_cumprod[t], alphas_cumprod[s]
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        direction = math.sqrt(max(1 - a_s - sigma**2, 0.0))  # "direction pointing to x_t"
        x_prev = math.sqrt(a_s) * x0_pred + direction * eps
        if eta > 0:
            x_prev = x_prev + sigma * _standard_normal(x_t, generator)
        if callback is not None:
            callback(StepInfo(step, len(timesteps), t, x_t, x0_pred, x_prev))
        x_t = x_prev
    return x_t


@torch.inference_mode()
def dpmpp_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    timesteps: Sequence[int],
    generator: torch.Generator,
    callback: StepCallback | None = None,
    *,
    eta: float = 0.0,
) -> torch.Tensor:
    """DPM-Solver++(2M), Algorithm 2 of Lu et al. (2022, arXiv:2211.01095), over `timesteps`.

    It solves the diffusion ODE in the data prediction x̂0 and λ = log(α/σ). From t to the
    next timestep s, with h = λ_s − λ_t:  x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·D, where
    D = x̂0_t on the first step (the 1st-order update, i.e. DDIM) and afterwards the
    multistep correction D = (1 + 1/(2r))·x̂0_t − 1/(2r)·x̂0_prev with r = h_prev/h.
    The last step lands on σ_0 = 0, where the update is exactly x̂0_t (h = ∞), as in
    diffusers. With η > 0 it is the SDE variant (Lu et al., Section 4; k-diffusion's
    `dpmpp_2m_sde`): x_s = (σ_s/σ_t)·e^{−ηh}·x_t + α_s·(1 − e^{−(1+η)h})·D
    + σ_s·√(1 − e^{−2ηh})·z, one z ~ N(0, I) from `generator` per step; η = 0 is the ODE.
    """
    alphas_cumprod = alphas_cumprod_list(diffusion)
    x_t, x0_prev, h_prev = x_T, None, None
    for step, (t, s) in enumerate(zip(timesteps, [*timesteps[1:], 0], strict=True)):
        eps = eps_fn(x_t, t)
        x0_pred = diffusion.predict_x0_from_eps(x_t, t, eps)
        if s == 0:
            x_next = x0_pred
        else:
            a_t, a_s = alphas_cumprod[t], alphas_cumprod[s]
            h = half_log_snr(a_s) - half_log_snr(a_t)
            data = x0_pred
            if x0_prev is not None:
                half_inv_r = 0.5 * h / h_prev
                data = (1 + half_inv_r) * x0_pred - half_inv_r * x0_prev
            keep = math.sqrt((1 - a_s) / (1 - a_t)) * math.exp(-eta * h)  # e^0 = 1 exactly
            x_next = keep * x_t - math.sqrt(a_s) * math.expm1(-(1 + eta) * h) * data
            if eta > 0:
                spread = math.sqrt(1 - a_s) * math.sqrt(-math.expm1(-2 * eta * h))
                x_next = x_next + spread * _standard_normal(x_t, generator)
            x0_prev, h_prev = x0_pred, h
        if callback is not None:
            callback(StepInfo(step, len(timesteps), t, x_t, x0_pred, x_next))
        x_t = x_next
    return x_t


SAMPLERS: dict[str, Solver] = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpmpp": dpmpp_sample}


def get_sampler(name: str) -> Solver:
    """The solver called `name`; a ConfigError lists the valid names otherwise."""
    check_choice("sampler", name, SAMPLER_NAMES)
    return SAMPLERS[name]
