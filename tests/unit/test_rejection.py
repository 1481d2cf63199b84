"""Rejection sampling (`reject_below`): the shipped filter, the redraw loop, and its surfaces.

Claims: the filter is a second reader, unlike the judge, that reaches its stated accuracy;
with a threshold no digit ends less legible than without one, and a digit drawn legibly the
first time is never touched; redraws come from the same generator, so the same seed gives
the same samples; the animation follows the digit that was kept; bad thresholds get one-line
errors on every surface.
"""

from __future__ import annotations

import pytest
import torch

from diffumnist import load_pretrained
from diffumnist.checkpoint import shipped_weights
from diffumnist.classifier import (
    FilterClassifier,
    MNISTClassifier,
    accuracy_on_test_split,
    classify,
    filter_confidence,
    load_classifier,
)
from diffumnist.cli import main
from diffumnist.config import ConfigError
from diffumnist.data import to_uint8
from diffumnist.evaluate import generate
from diffumnist.sampling import MAX_DRAWS, PRESETS, SamplingConfig
from diffumnist.webrequests import parse_generate

# The tiny untrained model draws noise the filter reads poorly, so a high threshold redraws.
TINY = SamplingConfig(sampler="dpmpp", steps=3, eta=1.0, guidance_scale=1.0, seed=7)
DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3]


def test_the_shipped_filter_is_not_the_judge_and_reaches_its_stated_accuracy(data_dir):
    net, meta = load_classifier(role="filter")
    judge, _ = load_classifier()
    assert isinstance(net, FilterClassifier) and isinstance(judge, MNISTClassifier)
    assert meta["filter"] and not meta.get("judge") and meta["test_accuracy"] >= 0.99
    assert accuracy_on_test_split(net, data_dir) == pytest.approx(meta["test_accuracy"])
    with pytest.raises(ConfigError, match="is not a filter checkpoint"):
        load_classifier(shipped_weights("classifier"), role="filter")


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


def test_a_low_threshold_changes_nothing_and_the_same_seed_gives_the_same_samples(
    tiny_class_model,
):
    plain, _ = tiny_class_model.generate(DIGITS, TINY)
    lenient, _ = tiny_class_model.generate(DIGITS, TINY.replace(reject_below=1e-9))
    assert torch.equal(lenient, plain)
    strict = TINY.replace(reject_below=0.99)
    first, _ = tiny_class_model.generate(DIGITS, strict)
    again, _ = tiny_class_model.generate(DIGITS, strict)
    assert torch.equal(first, again)


def test_the_time_model_is_filtered_by_its_likeliest_digit(make_checkpoint):
    import diffumnist

    model = diffumnist.load(make_checkpoint("time", hidden_dim=8, num_timesteps=10))
    plain, _ = model.generate(None, TINY, n=8)
    redrawn, _ = model.generate(None, TINY.replace(reject_below=0.9), n=8)
    assert (filter_confidence(redrawn, None) >= filter_confidence(plain, None)).all()


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, float("nan"), "0.9", True])
def test_bad_thresholds_are_refused(value):
    with pytest.raises(ConfigError, match="reject_below must be a probability strictly between"):
        SamplingConfig(reject_below=value)


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


def test_the_threshold_is_a_flag_that_can_undo_a_preset(capsys, make_checkpoint, tmp_path):
    ckpt = make_checkpoint("class", hidden_dim=8, num_timesteps=10)
    argv = ["sample", str(ckpt), "--digits", "1", "--out", str(tmp_path / "g.png"),
            "--sampler", "dpmpp", "--steps", "2", "--guidance-scale", "1"]  # fmt: skip
    assert main([*argv, "--reject-below", "0.5"]) == 0
    assert "redrawn below p = 0.5" in capsys.readouterr().out.splitlines()[1]
    assert main([*argv, "--reject-below", "none"]) == 0
    assert "redrawn" not in capsys.readouterr().out.splitlines()[1]
    for bad in ("2", "x"):
        assert main([*argv, "--reject-below", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("diffumnist: error:"), err
        assert "reject" in err


def test_train_filter_takes_only_its_flags(capsys):
    assert main(["train", "filter", "--batch-size", "64"]) == 2
    assert "train filter takes only --out, --epochs, --seed" in capsys.readouterr().err


def test_the_page_sends_a_threshold_or_none():
    request = parse_generate({"digits": [1], "reject_below": 0.8}, num_timesteps=300)
    assert request.sampling.reject_below == 0.8
    off = parse_generate({"digits": [1], "reject_below": None}, num_timesteps=300)
    assert off.sampling.reject_below is None
    with pytest.raises(ConfigError, match="reject_below must be a probability"):
        parse_generate({"digits": [1], "reject_below": 1}, num_timesteps=300)


@pytest.mark.slow
def test_the_fast_preset_draws_digits_the_judge_reads():
    """100 digits of the shipped class model with `--preset fast`: the judge reads all but
    at most one (the preset measures 0.999 and more at n = 10,000)."""
    config = PRESETS["class"]["fast"].replace(precision="bf16")
    images, labels = generate(load_pretrained("class"), 100, config, progress=False)
    predicted, _ = classify(load_classifier()[0], images)
    assert (predicted == labels).sum() >= 99
