"""Guidance as wrappers of ε: classifier-free, autoguidance, the interval, x̂0 clipping, NFE.

Claims: γ = 1 is plain conditional sampling; ε = ε_u + γ(ε_c − ε_u) in one batched pass;
outside the guidance interval only the conditional branch runs; autoguidance extrapolates
from a weaker twin; clipping changes only the out-of-range pixels of x̂0; the NFE count
follows from the timesteps and the interval.
"""

from __future__ import annotations

import pytest
import torch

from diffumnist.config import ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.models import DiffusionModel
from diffumnist.sampling import (
    SamplingConfig,
    all_timesteps,
    ddpm_sample,
    logsnr_timesteps,
    make_eps_fn,
    network_evaluations,
    trailing_timesteps,
)


def test_guidance_scale_one_is_plain_conditional_sampling(tiny_class_model):
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([3, 4]), 10).float()

    def conditional(x_t, t):
        return model.net(x_t, model.diffusion.time_fraction(torch.full((2,), t)), onehot)

    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    every = all_timesteps(model.diffusion.num_timesteps)
    plain = ddpm_sample(conditional, x_T, model.diffusion, every, torch.Generator().manual_seed(1))
    guided_fn = make_eps_fn(model.net, model.diffusion, onehot, guidance_scale=1.0)
    guided = ddpm_sample(guided_fn, x_T, model.diffusion, every, torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, guided)


def test_guidance_combines_branches_in_one_batch(tiny_class_model):
    """ε = ε_u + γ(ε_c − ε_u), checked against two separate forward passes."""
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([2]), 10).float()
    x = torch.randn(1, 1, 28, 28)
    frac = model.diffusion.time_fraction(torch.tensor([10]))
    with torch.no_grad():
        eps_c = model.net(x, frac, onehot)
        eps_u = model.net(x, frac, torch.zeros_like(onehot))
        guided = make_eps_fn(model.net, model.diffusion, onehot, 5.0)(x, 10)
        only_uncond = make_eps_fn(model.net, model.diffusion, onehot, 0.0)(x, 10)
    torch.testing.assert_close(guided, eps_u + 5.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(only_uncond, eps_u)


def test_a_non_finite_guidance_scale_is_refused():
    net, diffusion = torch.nn.Identity(), GaussianDiffusion(5, 1e-4, 0.02)
    for scale in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance_scale must be finite"):
            make_eps_fn(net, diffusion, None, scale)


def test_a_guidance_interval_over_all_steps_changes_nothing(tiny_class_model):
    everywhere, _ = tiny_class_model.sample([3, 7], seed=5, sampler="dpmpp", steps=8)
    interval, _ = tiny_class_model.sample(
        [3, 7], seed=5, sampler="dpmpp", steps=8, guidance_interval=(0, 20)
    )
    assert torch.equal(everywhere, interval)


def test_outside_the_guidance_interval_only_the_class_branch_runs(tiny_class_model):
    """γ applies for lo < t <= hi; elsewhere ε is ε_c alone (one network call, not two)."""
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([2, 6]), 10).float()
    guided = make_eps_fn(model.net, model.diffusion, onehot, 5.0, guidance_interval=(5, 12))
    conditional = make_eps_fn(model.net, model.diffusion, onehot, 1.0)
    always = make_eps_fn(model.net, model.diffusion, onehot, 5.0)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for t in (1, 5, 13, 20):
        assert torch.equal(guided(x, t), conditional(x, t)), t
    for t in (6, 12):
        assert torch.equal(guided(x, t), always(x, t)), t


def _x0_estimates(model, config: SamplingConfig) -> torch.Tensor:
    """Every step's x̂0 while sampling digits 3 and 7."""
    seen = []
    model.generate([3, 7], config, callback=lambda info: seen.append(info.x0_pred))
    return torch.stack(seen)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_clip_x0_keeps_every_steps_estimate_in_the_pixel_range(tiny_class_model, sampler):
    """An untrained net's x̂0 leaves [0, 1]; with clip_x0 every sampler steps from it clamped."""
    config = SamplingConfig(sampler=sampler, steps=None if sampler == "ddpm" else 6)
    plain = _x0_estimates(tiny_class_model, config)
    clipped = _x0_estimates(tiny_class_model, config.replace(clip_x0=True))
    assert plain.min() < -0.1 or plain.max() > 1.1
    assert clipped.min() >= -1e-5 and clipped.max() <= 1 + 1e-5
    assert not torch.equal(plain, clipped)


def test_clip_x0_changes_only_out_of_range_pixels_of_x0(tiny_class_model):
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([2, 6]), 10).float()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = make_eps_fn(model.net, model.diffusion, onehot, 5.0)(x, 10)
        clipped = make_eps_fn(model.net, model.diffusion, onehot, 5.0, clip_x0=True)(x, 10)
    x0_plain = model.diffusion.predict_x0_from_eps(x, 10, plain)
    x0_clipped = model.diffusion.predict_x0_from_eps(x, 10, clipped)
    inside = (x0_plain >= 0) & (x0_plain <= 1)
    assert 0 < inside.float().mean() < 1
    torch.testing.assert_close(x0_clipped, x0_plain.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(clipped[inside], plain[inside], atol=1e-4, rtol=1e-4)


class _Counting(torch.nn.Module):
    """A network wrapper that counts its calls and can scale its output."""

    def __init__(self, net: torch.nn.Module, factor: float = 1.0) -> None:
        super().__init__()
        self.net, self.factor, self.calls = net, factor, 0

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(*inputs) * self.factor


@pytest.mark.parametrize("kind", ["time", "class"])
def test_autoguidance_extrapolates_from_the_guide_inside_the_interval(kind):
    torch.manual_seed(0)
    model = DiffusionModel(ModelConfig(kind=kind, hidden_dim=8, num_timesteps=20)).eval()
    onehot = torch.eye(10)[:2] if kind == "class" else None
    x, t = torch.randn(2, 1, 28, 28), 15
    frac = model.diffusion.time_fraction(torch.full((2,), t))
    inputs = (x, frac) if onehot is None else (x, frac, onehot)
    guide = _Counting(model.net, factor=0.5)  # a "weaker" twin: half the prediction
    with torch.no_grad():
        eps = model.net(*inputs)
        guided = make_eps_fn(model.net, model.diffusion, onehot, 3.0, (10, 20), guide)(x, t)
        torch.testing.assert_close(guided, 0.5 * eps + 3.0 * (eps - 0.5 * eps))
        outside = make_eps_fn(model.net, model.diffusion, onehot, 3.0, (0, 10), guide)(x, t)
        assert torch.equal(outside, eps) and guide.calls == 1  # not asked outside
        only_guide = make_eps_fn(model.net, model.diffusion, onehot, 0.0, None, guide)(x, t)
        torch.testing.assert_close(only_guide, 0.5 * eps)
    config = SamplingConfig(sampler="dpmpp", steps=4, guidance_scale=2.0, guide="weak")
    assert network_evaluations(config, model.diffusion, conditional=False) == 8
    assert network_evaluations(config.replace(guide=None), model.diffusion, False) == 4


def test_network_evaluations_count_both_branches_only_inside_the_interval():
    config = SamplingConfig(sampler="dpmpp", steps=20, guidance_interval=(30, 180))
    visited = trailing_timesteps(300, 20)  # 300, 285, ..., 15
    inside = sum(30 < t <= 180 for t in visited)
    diffusion = GaussianDiffusion(300)
    assert network_evaluations(config, diffusion, conditional=True) == 20 + inside == 30
    assert network_evaluations(config, diffusion, conditional=False) == 20
    assert network_evaluations(SamplingConfig(), diffusion, conditional=True) == 600
    # γ = 0 and γ = 1 need one branch only
    for scale in (0.0, 1.0):
        assert network_evaluations(config.replace(guidance_scale=scale), diffusion, True) == 20
    # logsnr spacing crowds the steps at small t: fewer of them fall inside (30, 180]
    logsnr = config.replace(spacing="logsnr")
    inside = sum(30 < t <= 180 for t in logsnr_timesteps(diffusion, 20))
    assert network_evaluations(logsnr, diffusion, conditional=True) == 20 + inside == 26
