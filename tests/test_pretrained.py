"""The shipped models: each loads offline and still measures what MODEL_CARD.md states."""

from __future__ import annotations

import pytest
import torch

from diffumnist import load_pretrained
from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError
from diffumnist.data import load_split, to_unit
from diffumnist.evaluate import generate
from diffumnist.metrics import class_balance
from diffumnist.sampling import SamplingConfig


@pytest.mark.slow
def test_class_model_draws_the_requested_digits():
    """200 guided digits (γ = 5, DPM-Solver++ 20 steps): the judge reads >= 97 % right."""
    config = SamplingConfig(guidance_scale=5.0, sampler="dpmpp", steps=20, precision="bf16")
    images, labels = generate(load_pretrained("class"), 200, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    assert (predicted == labels).float().mean() >= 0.97


@pytest.mark.slow
def test_time_model_draws_all_ten_digits():
    """200 unconditional samples spread over the digits (entropy near log2 10 = 3.32 bits)."""
    config = SamplingConfig(sampler="dpmpp", steps=20, precision="bf16")
    images, _ = generate(load_pretrained("time"), 200, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    balance = class_balance(predicted)
    assert balance["entropy_bits"] > 3.0 and min(balance["histogram"]) > 0


def test_denoiser_removes_most_of_the_noise_at_its_training_sigma(data_dir):
    clean = to_unit(load_split("test", data_dir)[0][:500])
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    error = (load_pretrained("denoiser").denoise(noisy) - clean).square().mean().item()
    assert error < 0.012  # training loss plateaued at 0.0084; the noisy input's error is 0.25


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="denoiser, time, class"):
        load_pretrained("unet")
