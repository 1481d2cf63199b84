"""The only sampling loops.

Every sampler is a free function with one signature (k-diffusion's habit):

    sampler(eps_fn, x_T, diffusion, generator, callback=None) -> x0

`eps_fn(x_t, t)` returns ε_θ for integer timesteps t (N,), already guided if guidance is
wanted (see `make_eps_fn`). `callback(StepInfo)` fires once per step; pictures, GIFs and the
UI hang off it, so no sampler knows about them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffumnist.diffusion import GaussianDiffusion

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def ddpm_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    diffusion: GaussianDiffusion,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Algorithm 2 of Ho et al.: T ancestral steps from x_T ~ N(0, I) to x0 (N, 1, H, W)."""
    x_t = x_T
    num_steps = diffusion.num_timesteps
    for step, t in enumerate(range(num_steps, 0, -1)):
        t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps = eps_fn(x_t, t_batch)
        noise = torch.randn(x_t.shape, generator=generator, device=generator.device).to(x_t)
        x_prev, x0_pred = diffusion.p_sample_step(x_t, t, eps, noise)
        if callback is not None:
            callback(StepInfo(step, num_steps, t, x_t, x0_pred, x_prev))
        x_t = x_prev
    return x_t
