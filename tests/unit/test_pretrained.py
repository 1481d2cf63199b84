"""The shipped models: each loads offline and still measures what MODEL_CARD.md states."""

from __future__ import annotations

import pytest
import torch

from diffumnist import load_pretrained
from diffumnist.checkpoint import load_checkpoint
from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError
from diffumnist.data import load_split, to_unit
from diffumnist.evaluate import generate
from diffumnist.metrics import class_balance
from diffumnist.pretrained import BEYOND_RECIPE, SAMPLING_MODELS, TRAINED_HOW, pretrained_path
from diffumnist.sampling import SamplingConfig


@pytest.mark.slow
@pytest.mark.parametrize("name", ["class", "class_cpu"])
def test_class_models_draw_the_requested_digits(name):
    """200 guided digits (γ = 5, DPM-Solver++ 20 steps): the judge reads >= 97 % right."""
    config = SamplingConfig(guidance_scale=5.0, sampler="dpmpp", steps=20, precision="bf16")
    images, labels = generate(load_pretrained(name), 200, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    assert (predicted == labels).float().mean() >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("name", ["time", "time_e34"])
def test_time_models_draw_all_ten_digits(name):
    """200 unconditional samples spread over the digits (entropy near log2 10 = 3.32 bits)."""
    config = SamplingConfig(sampler="dpmpp", steps=20, precision="bf16")
    images, _ = generate(load_pretrained(name), 200, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    balance = class_balance(predicted)
    assert balance["entropy_bits"] > 3.0 and min(balance["histogram"]) > 0


def test_denoiser_removes_most_of_the_noise_at_its_training_sigma(data_dir):
    clean = to_unit(load_split("test", data_dir)[0][:500])
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    error = (load_pretrained("denoiser").denoise(noisy) - clean).square().mean().item()
    assert error < 0.012  # training loss plateaued at 0.0084; the noisy input's error is 0.25


@pytest.mark.parametrize("name", BEYOND_RECIPE)
def test_models_beyond_the_recipe_are_its_network_trained_otherwise(name):
    """A name beyond the recipe loads its own file: the recipe's network for that kind,
    trained otherwise; the kind's own name still loads the recipe's model."""
    improved = load_checkpoint(pretrained_path(name))
    recipe = load_checkpoint(pretrained_path(BEYOND_RECIPE[name]))
    assert improved.model_config == recipe.model_config
    assert recipe.meta["epoch"] == recipe.meta["train"]["epochs"] == 20
    assert improved.meta["train"] != recipe.meta["train"]
    assert load_pretrained(name).config.kind == BEYOND_RECIPE[name]


def test_time_e34_is_the_time_recipe_trained_on():
    """The recipe's run resumed past its 20 epochs, its learning-rate decay kept."""
    longer = load_checkpoint(pretrained_path("time_e34")).meta
    recipe = load_checkpoint(pretrained_path("time")).meta
    assert longer["epoch"] == 34 and longer["train"]["lr_gamma"] == recipe["train"]["lr_gamma"]


def test_class_cpu_is_the_fast_preset_trained_for_8_epochs_at_batch_128():
    """What MODEL_CARD.md says of class_cpu: `train class --preset fast --epochs 8
    --batch-size 128`, EMA (the preset's batch is 32 since)."""
    meta = load_checkpoint(pretrained_path("class_cpu")).meta
    assert meta["epoch"] == meta["train"]["epochs"] == 8 and meta["done"] and meta["ema"]
    assert meta["train"]["preset"] == "fast" and meta["train"]["lr"] == 3e-3
    assert meta["train"]["batch_size"] == 128


def test_every_model_that_samples_says_how_it_was_trained():
    assert set(TRAINED_HOW) == set(SAMPLING_MODELS)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="denoiser, time, class, time_e34, class_cpu"):
        load_pretrained("unet")
