"""The pipeline around a solver: the call users know, determinism, the callback hook, frames,
where sampling starts, guides, and requests refused before any work."""

from __future__ import annotations

import pytest
import torch

from diffumnist.config import ConfigError, ModelConfig
from diffumnist.data import shipped_mean_images
from diffumnist.models import DiffusionModel, load
from diffumnist.sampling import SamplingConfig, image_size, mean_images


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


def test_sample_and_generate_are_the_same_pipeline(tiny_class_model):
    config = SamplingConfig(sampler="ddim", steps=6, eta=0.5, seed=4, clip_x0=True)
    a, frames_a = tiny_class_model.sample(
        [2, 9], sampler="ddim", steps=6, eta=0.5, seed=4, clip_x0=True
    )
    b, frames_b = tiny_class_model.generate([2, 9], config)
    assert torch.equal(a, b) and torch.equal(frames_a, frames_b)


def test_callback_fires_once_per_step(tiny_class_model):
    seen = []
    tiny_class_model.sample([1], seed=0, callback=lambda info: seen.append(info.t))
    assert seen == list(range(20, 0, -1))


def test_frame_every_thins_the_animation(tiny_class_model):
    _, animation = tiny_class_model.sample([1, 2], seed=0, frame_every=5)
    assert animation.shape[0] == 1 + 20 // 5
    _, uneven = tiny_class_model.sample([1], seed=0, frame_every=6)
    assert uneven.shape[0] == 1 + 3 + 1  # x_T, steps 6, 12, 18, and always the final x0
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="frame_every must be an integer"):
            tiny_class_model.sample([1], frame_every=bad)


@pytest.mark.parametrize(
    ("name", "steps", "eta"),
    [("ddpm", None, 0.0), ("ddim", 5, 0.0), ("ddim", 5, 1.0), ("dpmpp", 5, 0.0)],
)
def test_every_sampler_runs_the_guided_class_model(tiny_class_model, name, steps, eta):
    c = torch.tensor([0, 7])
    kwargs = dict(guidance_scale=5.0, sampler=name, steps=steps, eta=eta)
    samples, animation = tiny_class_model.sample(c, seed=3, **kwargs)
    again, _ = tiny_class_model.sample(c, seed=3, **kwargs)
    assert samples.shape == (2, 1, 28, 28) and torch.isfinite(samples).all()
    assert animation.shape[0] == 1 + (steps or tiny_class_model.config.num_timesteps)
    assert torch.equal(samples, again)


def test_fast_samplers_default_to_few_steps_capped_at_T(tiny_class_model):
    seen: list[int] = []
    tiny_class_model.sample([1], sampler="dpmpp", callback=lambda info: seen.append(info.t))
    assert len(seen) == min(20, tiny_class_model.config.num_timesteps)


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
        {"c": [1], "img_wh": (28,)},
        {"c": [1], "img_wh": (28.5, 28)},
        {"c": None},
        {"c": [1] * 10_001},
    ],
)
def test_bad_requests_are_clear_errors(tiny_class_model, kwargs):
    with pytest.raises(ConfigError) as error:
        tiny_class_model.sample(**kwargs)
    assert "\n" not in str(error.value)


def test_image_sizes_are_whole_multiples_of_28():
    assert image_size((56, 28)) == (56, 28)
    for bad in ((30, 30), (0, 28), (28,), "28x28", (28.0, 28.5)):
        with pytest.raises(ConfigError, match="img_wh"):
            image_size(bad)


def test_time_model_takes_a_count():
    torch.manual_seed(0)
    model = DiffusionModel(ModelConfig(kind="time", hidden_dim=8, num_timesteps=5)).eval()
    samples, _ = model.sample(n=3, seed=0)
    assert samples.shape == (3, 1, 28, 28)
    with pytest.raises(ConfigError):
        model.sample(n=0)


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


def test_the_mean_images_are_each_digits_and_resize_to_larger_canvases():
    means = shipped_mean_images()
    onehot = torch.nn.functional.one_hot(torch.tensor([4, 0]), 10).float()
    assert torch.equal(mean_images(onehot, 2, (28, 28)), means[[4, 0]])
    assert torch.equal(mean_images(None, 3, (28, 28)), means[[-1, -1, -1]])
    assert mean_images(onehot, 2, (28, 56)).shape == (2, 1, 28, 56)


def test_the_mean_start_fits_larger_canvases(tiny_class_model):
    samples, _ = tiny_class_model.sample([4], img_wh=(56, 28), start="mean", seed=0)
    assert samples.shape == (1, 1, 28, 56)


def test_a_guide_that_is_the_model_itself_changes_nothing(make_checkpoint):
    path = make_checkpoint("time", hidden_dim=8, num_timesteps=10)
    model = load(path)
    config = SamplingConfig(sampler="dpmpp", steps=5, eta=1.0, guidance_scale=3.0, seed=1)
    plain, _ = model.generate(None, config, n=3)
    guided, _ = model.generate(None, config.replace(guide=str(path)), n=3)
    assert torch.equal(plain, guided)  # ε + γ·(ε − ε) = ε exactly


def test_a_guide_must_match_the_model(make_checkpoint, tmp_path):
    model = load(make_checkpoint("time", hidden_dim=8, num_timesteps=10))
    for other in (make_checkpoint("class", 8, 10), make_checkpoint("time", 8, 12)):
        with pytest.raises(ConfigError, match="must match the model it guides") as error:
            model.sample(n=1, guide=str(other), sampler="dpmpp", steps=2)
        assert error.value.setting == "guide"
    with pytest.raises(ConfigError, match="guide must be a name") as error:
        SamplingConfig(guide="")
    assert error.value.setting == "guide"
    with pytest.raises(ConfigError, match="no weak twin ships for the class model") as error:
        load(make_checkpoint("class", 8, 10)).sample([1], guide="weak", sampler="dpmpp", steps=2)
    assert error.value.setting == "guide"
    with pytest.raises(ConfigError, match="cannot read guide") as error:
        model.sample(n=1, guide=str(tmp_path / "missing.safetensors"), sampler="dpmpp", steps=2)
    assert error.value.setting == "guide"
    # a narrower guide is fine: Karras et al. guide with smaller networks
    model.sample(n=1, guide=str(make_checkpoint("time", 4, 10)), sampler="dpmpp", steps=2)
