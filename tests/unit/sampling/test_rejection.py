"""Rejection sampling (`reject_below`) in the pipeline: the redraw loop.

Claims: with a threshold no digit ends less legible than without one, and a digit drawn
legibly the first time is never touched; redraws come from the same generator, so the same
seed gives the same samples; the animation follows the digit that was kept; bad thresholds
get one-line errors naming the setting.
"""

from __future__ import annotations

import pytest
import torch

from diffumnist import load_pretrained
from diffumnist.classifier import classify, filter_confidence, load_classifier
from diffumnist.config import ConfigError
from diffumnist.data import to_uint8
from diffumnist.evaluate import generate
from diffumnist.sampling import MAX_DRAWS, PRESETS, SamplingConfig

# The tiny untrained model draws noise the filter reads poorly, so a high threshold redraws.
TINY = SamplingConfig(sampler="dpmpp", steps=3, eta=1.0, guidance_scale=1.0, seed=7)
DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3]


def test_no_digit_ends_less_legible_and_first_draws_that_pass_are_kept(tiny_class_model):
    plain, plain_frames = tiny_class_model.generate(DIGITS, TINY)
    draws = []
    redrawn, frames = tiny_class_model.generate(
        DIGITS, TINY.replace(reject_below=0.9), callback=lambda info: draws.append(info.draw)
    )
    digits = torch.tensor(DIGITS)
    before, after = filter_confidence(plain, digits), filter_confidence(redrawn, digits)
    assert (after >= before).all() and (after > before).any()
    passed = before >= 0.9
    assert torch.equal(redrawn[passed], plain[passed])  # the first draw, untouched
    assert torch.equal(frames[:, passed], plain_frames[:, passed])
    assert 0 < max(draws) < MAX_DRAWS  # redraws ran, and no more than allowed
    assert torch.equal(frames[-1], to_uint8(redrawn))  # the animation ends on the kept digit
    assert frames.shape == plain_frames.shape


def test_a_redraws_callback_names_its_draw_and_the_slots_it_fills(tiny_class_model):
    seen = []
    tiny_class_model.generate(
        DIGITS, TINY.replace(reject_below=0.9), callback=lambda info: seen.append(info)
    )
    first = [info for info in seen if info.draw == 0]
    assert len(first) == 3 and all(info.slots is None for info in first)
    for info in seen[3:]:
        assert info.draw > 0 and info.slots is not None
        assert len(info.slots) == info.x_t.shape[0] <= len(DIGITS)


def test_a_low_threshold_changes_nothing_and_the_same_seed_gives_the_same_samples(
    tiny_class_model,
):
    plain, _ = tiny_class_model.generate(DIGITS, TINY)
    lenient, _ = tiny_class_model.generate(DIGITS, TINY.replace(reject_below=1e-9))
    assert torch.equal(lenient, plain)
    strict = TINY.replace(reject_below=0.99)
    first, _ = tiny_class_model.generate(DIGITS[:4], strict)
    again, _ = tiny_class_model.generate(DIGITS[:4], strict)
    assert torch.equal(first, again)


def test_the_time_model_is_filtered_by_its_likeliest_digit(make_checkpoint):
    import diffumnist

    model = diffumnist.load(make_checkpoint("time", hidden_dim=8, num_timesteps=10))
    plain, _ = model.generate(None, TINY, n=8)
    redrawn, _ = model.generate(None, TINY.replace(reject_below=0.9), n=8)
    assert (filter_confidence(redrawn, None) >= filter_confidence(plain, None)).all()


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, float("nan"), "0.9", True])
def test_bad_thresholds_are_refused(value):
    with pytest.raises(ConfigError, match="reject_below must be") as error:
        SamplingConfig(reject_below=value)
    assert error.value.setting == "reject_below" and "\n" not in str(error.value)


def test_only_28x28_digits_can_be_filtered(tiny_class_model):
    with pytest.raises(ConfigError, match="reject_below reads 28x28 digits only"):
        tiny_class_model.generate([1], TINY.replace(reject_below=0.9), img_wh=(56, 28))


def test_sample_takes_a_threshold_and_none_turns_a_presets_off(tiny_class_model):
    settings = {"sampler": "dpmpp", "steps": 3, "eta": 1.0, "guidance_scale": 1.0, "seed": 7}
    a, _ = tiny_class_model.sample([1, 2], reject_below=0.9, **settings)
    b, _ = tiny_class_model.generate([1, 2], TINY.replace(reject_below=0.9))
    assert torch.equal(a, b)
    wide, _ = tiny_class_model.sample([1], (56, 28), preset="fast", reject_below=None, steps=3)
    assert wide.shape == (1, 1, 28, 56)
    with pytest.raises(ConfigError, match="reject_below=None keeps every draw"):
        tiny_class_model.sample([1], (56, 28), preset="fast", steps=3)


@pytest.mark.slow
def test_the_fast_preset_draws_digits_the_judge_reads():
    """100 digits of the shipped class model with `--preset fast`: the judge reads all but
    at most one (the preset measures 0.999 and more at n = 10,000)."""
    config = PRESETS["class"]["fast"].replace(precision="bf16")
    images, labels = generate(load_pretrained("class"), 100, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    assert (predicted == labels).sum() >= 99
