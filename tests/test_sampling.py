"""Sampling: determinism, the callback hook, guidance, and the call users know."""

from __future__ import annotations

import pytest
import torch

from diffumnist.config import ConfigError, ModelConfig
from diffumnist.models import DiffusionModel
from diffumnist.sampling import ddpm_sample, make_eps_fn


def test_the_original_call_works(tiny_class_model):
    c = torch.tensor([5, 3])
    samples, animation = tiny_class_model.sample(c, img_wh=(28, 28), guidance_scale=5.0, seed=42)
    assert samples.shape == (2, 1, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 1
    T = tiny_class_model.config.num_timesteps
    assert animation.shape == (T + 1, 2, 28, 28) and animation.dtype == torch.uint8


def test_same_seed_same_samples_bit_for_bit(tiny_class_model):
    c = torch.arange(10)
    a, _ = tiny_class_model.sample(c, seed=7)
    b, _ = tiny_class_model.sample(c, seed=7)
    other, _ = tiny_class_model.sample(c, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, other)


def test_callback_fires_once_per_step(tiny_class_model):
    seen = []
    tiny_class_model.sample([1], seed=0, callback=lambda info: seen.append(info.t))
    assert seen == list(range(20, 0, -1))


def test_frame_every_thins_the_animation(tiny_class_model):
    _, animation = tiny_class_model.sample([1, 2], seed=0, frame_every=5)
    assert animation.shape[0] == 1 + 20 // 5


def test_guidance_scale_one_is_plain_conditional_sampling(tiny_class_model):
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([3, 4]), 10).float()

    def conditional(x_t, t):
        return model.net(x_t, model.diffusion.time_fraction(t), onehot)

    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = ddpm_sample(conditional, x_T, model.diffusion, torch.Generator().manual_seed(1))
    guided_fn = make_eps_fn(model.net, model.diffusion, onehot, guidance_scale=1.0)
    guided = ddpm_sample(guided_fn, x_T, model.diffusion, torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, guided)


def test_guidance_combines_branches_in_one_batch(tiny_class_model):
    """ε = ε_u + γ(ε_c − ε_u), checked against two separate forward passes."""
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([2]), 10).float()
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([10])
    frac = model.diffusion.time_fraction(t)
    eps_c = model.net(x, frac, onehot)
    eps_u = model.net(x, frac, torch.zeros_like(onehot))
    guided = make_eps_fn(model.net, model.diffusion, onehot, 5.0)(x, t)
    torch.testing.assert_close(guided, eps_u + 5.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"c": [10]},
        {"c": [-1]},
        {"c": [1.5]},
        {"c": []},
        {"c": [1], "guidance_scale": float("nan")},
        {"c": [1], "guidance_scale": float("inf")},
        {"c": [1], "img_wh": (30, 30)},
        {"c": None},
    ],
)
def test_bad_requests_are_clear_errors(tiny_class_model, kwargs):
    with pytest.raises(ConfigError):
        tiny_class_model.sample(**kwargs)


def test_time_model_takes_a_count():
    torch.manual_seed(0)
    model = DiffusionModel(ModelConfig(kind="time", hidden_dim=8, num_timesteps=5)).eval()
    samples, _ = model.sample(n=3, seed=0)
    assert samples.shape == (3, 1, 28, 28)
    with pytest.raises(ConfigError):
        model.sample(n=0)
