"""Where the steps of a sampler fall: the timesteps it visits, as data (k-diffusion's habit).

Solvers take the list and never see how it was chosen. Both spacings start at t = T, where
x_T belongs, and visit every timestep when S = T:
- trailing (Lin et al. 2024, Table 2): t_i = round((S − i)·T/S), evenly in t. diffusers'
  `timestep_spacing="trailing"` gives the same steps, shifted by one (its k is our t − 1).
  The last step leaves x̂0 at t = T/S (t = 15 for 20 steps, σ/α = 0.09), and that estimate
  keeps a faint haze of noise over the black background.
- logsnr (Lu et al. 2022, DPM-Solver's recommendation for low-resolution pixel models;
  diffusers' `use_lu_lambdas`): evenly in λ = log(α/σ) from t = T down to t = 1, so steps
  crowd where the noise is faint and the last x̂0 comes from t = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from diffumnist.config import check_choice
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling.settings import SamplingConfig


def all_timesteps(num_timesteps: int) -> list[int]:
    """T, T − 1, …, 1: the recipe's ancestral sampler visits every timestep."""
    return list(range(num_timesteps, 0, -1))


def trailing_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Trailing spacing: t_i = round((S − i)·T/S), i = 0 … S−1, halves to even (as NumPy).

    The spacing between visited timesteps is T/S >= 1, so rounding keeps them distinct.
    """
    return [round((steps - i) * num_timesteps / steps) for i in range(steps)]


def alphas_cumprod_list(diffusion: GaussianDiffusion) -> list[float]:
    """ᾱ_t for t = 0 … T as Python floats (ᾱ_0 = 1), so per-step scalars need no device sync."""
    return [1.0, *diffusion.alphas_cumprod.double().cpu().tolist()]


def half_log_snr(alpha_cumprod: float) -> float:
    """λ_t = log(α_t/σ_t) with α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) (Lu et al. 2022, Section 2)."""
    return 0.5 * math.log(alpha_cumprod / (1 - alpha_cumprod))


def logsnr_timesteps(diffusion: GaussianDiffusion, steps: int) -> list[int]:
    """Log-SNR spacing: the timestep nearest to each of S points spaced evenly in λ from
    λ_T to λ_1 (diffusers' `use_lu_lambdas` rounds to the same ones), kept distinct.

    Near t = 1, λ changes faster than the even spacing, so two points may share a nearest
    timestep (20 steps: ..., 4, 2, 2, 1 in diffusers); here step i is kept at or below
    T − i and pushed above step i + 1, so S steps visit S distinct timesteps from T to 1.
    """
    T = diffusion.num_timesteps
    half_log_snrs = [half_log_snr(a) for a in alphas_cumprod_list(diffusion)[1:]]  # t = 1 … T
    low, high = half_log_snrs[-1], half_log_snrs[0]
    visited = []
    for i in range(steps):
        target = low + (high - low) * i / max(steps - 1, 1)
        nearest = 1 + min(range(T), key=lambda k: abs(half_log_snrs[k] - target))
        visited.append(min(nearest, T - i))
    for i in range(steps - 2, -1, -1):
        visited[i] = max(visited[i], visited[i + 1] + 1)
    return visited


SPACINGS: dict[str, Callable[[GaussianDiffusion, int], list[int]]] = {
    "trailing": lambda diffusion, steps: trailing_timesteps(diffusion.num_timesteps, steps),
    "logsnr": logsnr_timesteps,
}


def sampler_timesteps(diffusion: GaussianDiffusion, steps: int, spacing: str) -> list[int]:
    """The S timesteps a fast solver visits, from T down, for `spacing`."""
    check_choice("spacing", spacing, tuple(SPACINGS))
    return SPACINGS[spacing](diffusion, steps)


def visited_timesteps(config: SamplingConfig, diffusion: GaussianDiffusion) -> list[int]:
    """The timesteps `config`'s solver visits with this diffusion's T, from T down."""
    steps = config.num_steps(diffusion.num_timesteps)
    if config.sampler == "ddpm":
        return all_timesteps(diffusion.num_timesteps)
    return sampler_timesteps(diffusion, steps, config.spacing)
