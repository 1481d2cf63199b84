"""Sampling: determinism, the callback hook, guidance, and the call users know."""

from __future__ import annotations

import pytest
import torch

from diffumnist.config import ConfigError, ModelConfig
from diffumnist.data import shipped_mean_images
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.models import DiffusionModel, load
from diffumnist.sampling import (
    PRESETS,
    SamplingConfig,
    ddpm_sample,
    logsnr_timesteps,
    make_eps_fn,
    network_evaluations,
    trailing_timesteps,
)


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
        return model.net(x_t, model.diffusion.time_fraction(torch.full((2,), t)), onehot)

    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = ddpm_sample(conditional, x_T, model.diffusion, torch.Generator().manual_seed(1))
    guided_fn = make_eps_fn(model.net, model.diffusion, onehot, guidance_scale=1.0)
    guided = ddpm_sample(guided_fn, x_T, model.diffusion, torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, guided)


def test_guidance_combines_branches_in_one_batch(tiny_class_model):
    """ε = ε_u + γ(ε_c − ε_u), checked against two separate forward passes."""
    model = tiny_class_model
    onehot = torch.nn.functional.one_hot(torch.tensor([2]), 10).float()
    x = torch.randn(1, 1, 28, 28)
    frac = model.diffusion.time_fraction(torch.tensor([10]))
    eps_c = model.net(x, frac, onehot)
    eps_u = model.net(x, frac, torch.zeros_like(onehot))
    guided = make_eps_fn(model.net, model.diffusion, onehot, 5.0)(x, 10)
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
    plain = make_eps_fn(model.net, model.diffusion, onehot, 5.0)(x, 10)
    clipped = make_eps_fn(model.net, model.diffusion, onehot, 5.0, clip_x0=True)(x, 10)
    x0_plain = model.diffusion.predict_x0_from_eps(x, 10, plain)
    x0_clipped = model.diffusion.predict_x0_from_eps(x, 10, clipped)
    inside = (x0_plain >= 0) & (x0_plain <= 1)
    assert 0 < inside.float().mean() < 1
    torch.testing.assert_close(x0_clipped, x0_plain.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(clipped[inside], plain[inside], atol=1e-4, rtol=1e-4)


def test_clip_x0_must_be_a_bool():
    with pytest.raises(ConfigError, match="clip_x0 must be true or false"):
        SamplingConfig(clip_x0="yes")


def test_network_evaluations_count_both_branches_only_inside_the_interval():
    config = SamplingConfig(sampler="dpmpp", steps=20, guidance_interval=(30, 180))
    visited = trailing_timesteps(300, 20)  # 300, 285, ..., 15
    inside = sum(30 < t <= 180 for t in visited)
    diffusion = GaussianDiffusion(300)
    assert network_evaluations(config, diffusion, conditional=True) == 20 + inside == 30
    assert network_evaluations(config, diffusion, conditional=False) == 20
    assert network_evaluations(SamplingConfig(), diffusion, conditional=True) == 600
    # logsnr spacing crowds the steps at small t: fewer of them fall inside (30, 180]
    logsnr = config.replace(spacing="logsnr")
    inside = sum(30 < t <= 180 for t in logsnr_timesteps(diffusion, 20))
    assert network_evaluations(logsnr, diffusion, conditional=True) == 20 + inside == 26


def test_presets_resolve_to_their_settings_and_explicit_values_win(tiny_class_model):
    assert SamplingConfig.from_preset("recipe", "class") == SamplingConfig()
    assert SamplingConfig().sampler == "ddpm" and SamplingConfig().guidance_scale == 5.0
    documented = SamplingConfig(  # README "Rejection sampling": legible at <= 40 NFE
        sampler="dpmpp", steps=20, eta=1.0, guidance_scale=1.0, start="mean", reject_below=0.97
    )
    assert PRESETS["class"]["fast"] == documented == PRESETS["class"]["best"]
    # the time model, which has no classes: the SDE on log-SNR steps, autoguided by its weak
    # twin for t > 100, redrawn below 0.97 (README "Log-SNR steps and guidance at high noise")
    time_fast = SamplingConfig(
        sampler="dpmpp", steps=20, eta=1.0, spacing="logsnr", guidance_scale=1.5,
        guidance_interval=(100, 300), guide="weak", start="mean", reject_below=0.97,
    )  # fmt: skip
    assert SamplingConfig.from_preset("fast", "time") == time_fast
    assert SamplingConfig.from_preset("best", "time") == time_fast.replace(guidance_scale=1.75)
    assert SamplingConfig.from_preset("recipe", "time") == SamplingConfig()
    assert SamplingConfig.from_preset("fast", "time", eta=0.5).eta == 0.5
    assert SamplingConfig.from_preset("fast", "class", start="noise").start == "noise"
    assert SamplingConfig.from_preset("fast", "class", clip_x0=True).clip_x0
    assert SamplingConfig.from_preset("fast", "class", reject_below=None).reject_below is None
    fast = SamplingConfig.from_preset("fast", "class", seed=3)
    assert (fast.sampler, fast.seed) == (PRESETS["class"]["fast"].sampler, 3)
    assert SamplingConfig.from_preset("fast", "class", guidance_scale=2.0).guidance_scale == 2.0
    # a new sampler drops the preset's sampler-specific steps
    assert SamplingConfig.from_preset("fast", "class", sampler="ddpm").steps is None
    with pytest.raises(ConfigError, match="preset must be one of"):
        SamplingConfig.from_preset("fastest", "class")
    with pytest.raises(ConfigError, match="model kind must be one of"):
        SamplingConfig.from_preset("fast", "denoiser")
    # (the tiny model has T = 20, so the preset's interval is replaced)
    a, _ = tiny_class_model.sample([1], preset="fast", seed=2, guidance_interval=(3, 12))
    b, _ = tiny_class_model.generate([1], fast.replace(seed=2, guidance_interval=(3, 12)))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        ((180, 30), "LO < HI"),
        ((-1, 30), "LO >= 0"),
        ((1.5, 30), "whole timesteps"),
        ((30,), "two whole"),
        ("30,180", "two whole"),
    ],
)
def test_bad_guidance_intervals_are_one_line_errors(interval, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(guidance_interval=interval)


def test_an_interval_past_T_is_refused_for_that_model(tiny_class_model):
    with pytest.raises(ConfigError, match=r"within 0\.\.20"):
        tiny_class_model.sample([1], guidance_interval=(5, 30))


def _first_input(model, c, **settings):
    """x_T as the sampler receives it."""
    seen = []
    model.sample(c, seed=3, sampler="dpmpp", steps=4, callback=lambda info: seen.append(info.x_t),
                 **settings)  # fmt: skip
    return seen[0]


def test_the_mean_start_is_the_forward_process_from_each_digits_mean_image(tiny_class_model):
    """start="mean": x_T = √ᾱ_T·μ_digit + √(1−ᾱ_T)·z, with the z that start="noise" uses;
    the time model starts from the mean of all digits."""
    digits = torch.tensor([0, 7, 7])
    noise = _first_input(tiny_class_model, digits)
    expected = tiny_class_model.diffusion.q_sample(shipped_mean_images()[digits], 20, noise)
    torch.testing.assert_close(_first_input(tiny_class_model, digits, start="mean"), expected)
    time_model = DiffusionModel(ModelConfig(kind="time", hidden_dim=8, num_timesteps=5)).eval()
    noise = _first_input(time_model, None, n=2)
    expected = time_model.diffusion.q_sample(shipped_mean_images()[[-1, -1]], 5, noise)
    torch.testing.assert_close(_first_input(time_model, None, n=2, start="mean"), expected)


def test_the_mean_start_fits_larger_canvases(tiny_class_model):
    samples, _ = tiny_class_model.sample([4], img_wh=(56, 28), start="mean", seed=0)
    assert samples.shape == (1, 1, 28, 56)


def test_a_bad_start_is_a_one_line_error():
    with pytest.raises(ConfigError, match="start must be one of"):
        SamplingConfig(start="zeros")
    assert "from the mean digit" in SamplingConfig(start="mean").describe()


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


def test_a_guide_that_is_the_model_itself_changes_nothing(make_checkpoint):
    path = make_checkpoint("time", hidden_dim=8, num_timesteps=10)
    model = load(path)
    config = SamplingConfig(sampler="dpmpp", steps=5, eta=1.0, guidance_scale=3.0, seed=1)
    plain, _ = model.generate(None, config, n=3)
    guided, _ = model.generate(None, config.replace(guide=str(path)), n=3)
    assert torch.equal(plain, guided)  # ε + γ·(ε − ε) = ε exactly


def test_a_guide_must_match_the_model(make_checkpoint):
    model = load(make_checkpoint("time", hidden_dim=8, num_timesteps=10))
    for other in (make_checkpoint("class", 8, 10), make_checkpoint("time", 8, 12)):
        with pytest.raises(ConfigError, match="must match the model it guides"):
            model.sample(n=1, guide=str(other), sampler="dpmpp", steps=2)
    with pytest.raises(ConfigError, match="guide must be weak or a checkpoint path"):
        SamplingConfig(guide="")
    with pytest.raises(ConfigError, match="no weak twin ships for the class model"):
        load(make_checkpoint("class", 8, 10)).sample([1], guide="weak", sampler="dpmpp", steps=2)
    # a narrower guide is fine: Karras et al. guide with smaller networks
    model.sample(n=1, guide=str(make_checkpoint("time", 4, 10)), sampler="dpmpp", steps=2)


def test_spacing_is_checked_and_belongs_to_the_fast_samplers():
    with pytest.raises(ConfigError, match=r"spacing must be one of .*trailing.*logsnr"):
        SamplingConfig(sampler="dpmpp", spacing="karras")
    with pytest.raises(ConfigError, match="spacing applies to the ddim and dpmpp samplers"):
        SamplingConfig(spacing="logsnr")
    logsnr = SamplingConfig(sampler="dpmpp", steps=20, eta=1.0, spacing="logsnr")
    assert "logsnr spacing" in logsnr.describe()
    assert "spacing" not in logsnr.replace(spacing="trailing").describe()
    # a new sampler resets the sampler-specific settings, so a preset's spacing never
    # makes `--sampler ddpm` an error
    assert logsnr.replace(sampler="ddpm") == SamplingConfig(sampler="ddpm")
    assert logsnr.replace(sampler="ddim").spacing == "trailing"
    assert logsnr.replace(sampler="ddim", spacing="logsnr").spacing == "logsnr"
