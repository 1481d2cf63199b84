"""Guidance: wrappers of the network's noise prediction, and what they cost.

`make_eps_fn` turns a network into the ε_θ(x_t, t) a solver calls, with classifier-free
guidance or autoguidance, optionally only inside a guidance interval, and optionally with x̂0
clipped. Solvers never see any of it (improved-diffusion's `denoised_fn` habit).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling.settings import SamplingConfig
from diffumnist.sampling.solvers import EpsFn
from diffumnist.sampling.timesteps import visited_timesteps


def make_eps_fn(
    net: nn.Module,
    diffusion: GaussianDiffusion,
    class_onehot: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    guidance_interval: tuple[int, int] | None = None,
    guide_net: nn.Module | None = None,
    clip_x0: bool = False,
) -> EpsFn:
    """Wrap a network as ε_θ(x_t, t), guided: classifier-free or by a weaker twin.

    Classifier-free guidance (the class model, no `guide_net`): ε = ε_u + γ·(ε_c − ε_u),
    ε_u from the zero class vector. Both branches run in one batched forward pass; γ = 1
    needs only ε_c and γ = 0 only ε_u, so those skip the other. Autoguidance (`guide_net`,
    Karras et al. 2024): ε = ε_g + γ·(ε − ε_g), ε_g from a weaker model of the same kind
    given the same input and class: it pushes away from the errors a weaker model makes
    rather than from the unconditional digit, so it needs no classes and costs no variety.
    With `guidance_interval` (lo, hi), γ applies only for lo < t <= hi and other steps take
    ε alone (Kynkäänniemi et al. 2024): one network evaluation instead of two there.
    With `clip_x0` the (guided) ε is turned into x̂0, clamped to the pixel range [0, 1] and
    turned back, so every solver steps from the clamped estimate (Ho et al. 2020's
    clip_denoised; diffusers' DDIM with clip_sample and use_clipped_model_output). Guidance
    extrapolates, and its x̂0 overshoots the range the data lives in.
    """
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite; got {guidance_scale}")
    low, high = guidance_interval or (0, diffusion.num_timesteps)

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        timesteps = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        frac = diffusion.time_fraction(timesteps)
        scale = guidance_scale if low < t <= high else 1.0
        inputs = (x_t, frac) if class_onehot is None else (x_t, frac, class_onehot)
        if guide_net is not None and scale != 1.0:
            eps_guide = guide_net(*inputs).float()
            return eps_guide if scale == 0.0 else eps_guide.lerp(net(*inputs).float(), scale)
        if class_onehot is None or scale == 1.0:
            return net(*inputs).float()
        uncond = torch.zeros_like(class_onehot)
        if scale == 0.0:
            return net(x_t, frac, uncond).float()
        both = net(
            torch.cat([x_t, x_t]), torch.cat([frac, frac]), torch.cat([class_onehot, uncond])
        )
        eps_cond, eps_uncond = both.float().chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    if not clip_x0:
        return eps_fn

    def clipped_eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        x0_pred = diffusion.predict_x0_from_eps(x_t, t, eps_fn(x_t, t)).clamp(0, 1)
        return diffusion.predict_eps_from_x0(x_t, t, x0_pred)

    return clipped_eps_fn


def network_evaluations(
    config: SamplingConfig, diffusion: GaussianDiffusion, conditional: bool
) -> int:
    """Network evaluations per image and draw: guidance (classifier-free for a `conditional`
    model, or by a guide) costs two inside the guidance interval, one outside. With
    `reject_below` each redraw costs as much again (benchmarks/quality_map.py counts them).

    γ = 0 and γ = 1 need one branch only, as `make_eps_fn` computes them.
    """
    visited = visited_timesteps(config, diffusion)
    guided = conditional or config.guide is not None
    if not guided or config.guidance_scale in (0.0, 1.0):
        return len(visited)
    low, high = config.guidance_interval or (0, diffusion.num_timesteps)
    return len(visited) + sum(low < t <= high for t in visited)
