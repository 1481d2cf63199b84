"""Presets: named settings per model kind, the values the quality map chose, and how a
setting given wins over them: a value replaces the preset's, None switches it off where the
setting admits None and is refused in one line naming the setting elsewhere.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffumnist.config import ConfigError, ModelConfig
from diffumnist.models import DiffusionModel
from diffumnist.sampling import (
    NOT_GIVEN,
    PRESET_NAMES,
    PRESET_SUMMARIES,
    PRESETS,
    SETTINGS,
    SamplingConfig,
    from_preset,
)

DEFAULTS = SamplingConfig()
# Every (kind, preset, setting) where the preset sets a value other than the default.
PRESET_SETTINGS = [
    (kind, name, spec)
    for kind, presets in PRESETS.items()
    for name, config in presets.items()
    for spec in SETTINGS
    if getattr(config, spec.name) != getattr(DEFAULTS, spec.name)
]
NULLABLE = [(k, n, s.name) for k, n, s in PRESET_SETTINGS if s.nullable]
NOT_NULLABLE = [(k, n, s.name) for k, n, s in PRESET_SETTINGS if not s.nullable]


def test_the_presets_hold_the_settings_the_quality_map_chose():
    assert from_preset("recipe", "class") == SamplingConfig() == from_preset("recipe", "time")
    assert SamplingConfig().sampler == "ddpm" and SamplingConfig().guidance_scale == 5.0
    legible = SamplingConfig(  # docs/quality.md: MNIST-FID 2.20 at 22 NFE, legible digits
        sampler="dpmpp", steps=20, eta=1.0, guidance_scale=1.0, start="mean", reject_below=0.97
    )
    assert from_preset("fast", "class") == legible
    # the time model, which has no classes: the SDE on log-SNR steps, autoguided by its weak
    # twin for t > 100, redrawn below 0.97
    time_fast = SamplingConfig(
        sampler="dpmpp", steps=20, eta=1.0, spacing="logsnr", guidance_scale=1.5,
        guidance_interval=(100, 300), guide="weak", start="mean", reject_below=0.97,
    )  # fmt: skip
    assert from_preset("fast", "time") == time_fast
    assert from_preset("best", "time") == time_fast.replace(guidance_scale=1.75)


def test_the_class_model_offers_recipe_and_fast_and_the_time_model_also_best():
    assert tuple(PRESETS["class"]) == ("recipe", "fast")
    assert tuple(PRESETS["time"]) == ("recipe", "fast", "best") == PRESET_NAMES
    assert {kind: tuple(s) for kind, s in PRESET_SUMMARIES.items()} == {
        kind: tuple(p) for kind, p in PRESETS.items()
    }
    with pytest.raises(ConfigError, match="the class model offers the presets recipe, fast") as e:
        from_preset("best", "class")
    assert e.value.setting == "preset"
    with pytest.raises(ConfigError, match="preset must be one of recipe, fast, best"):
        from_preset("fastest", "class")
    with pytest.raises(ConfigError, match="model kind must be one of"):
        from_preset("fast", "denoiser")


def test_the_settings_given_win_over_the_presets():
    assert from_preset("fast", "time", eta=0.5).eta == 0.5
    assert from_preset("fast", "class", start="noise").start == "noise"
    assert from_preset("fast", "class", clip_x0=True).clip_x0
    assert from_preset("fast", "class", guidance_scale=2.0).guidance_scale == 2.0
    fast = from_preset("fast", "class", seed=3)
    assert (fast.sampler, fast.seed) == (PRESETS["class"]["fast"].sampler, 3)
    # NOT_GIVEN, on every surface, leaves the preset's value standing
    assert from_preset("fast", "time", guide=NOT_GIVEN, eta=NOT_GIVEN) == PRESETS["time"]["fast"]
    # a new sampler drops the preset's sampler-specific settings and its steps
    assert from_preset("fast", "time", sampler="ddpm") == SamplingConfig(
        guidance_scale=1.5, guidance_interval=(100, 300), guide="weak", start="mean",
        reject_below=0.97,
    )  # fmt: skip


def test_sample_runs_the_preset_with_the_settings_given(tiny_class_model):
    given = {"seed": 2, "guidance_interval": (3, 12), "steps": 4, "reject_below": None}
    a, _ = tiny_class_model.sample([1], preset="fast", **given)
    b, _ = tiny_class_model.generate([1], PRESETS["class"]["fast"].replace(**given))
    assert torch.equal(a, b)


def test_every_setting_a_preset_sets_is_covered():
    """The presets set these today; each has its test below."""
    names = {(k, n, s.name) for k, n, s in PRESET_SETTINGS}
    assert {("class", "fast", "reject_below"), ("time", "fast", "guide")} <= names
    assert {s for *_, s in NULLABLE} == {"steps", "guidance_interval", "guide", "reject_below"}
    assert {s for *_, s in NOT_NULLABLE} == {
        "sampler", "eta", "spacing", "guidance_scale", "start"
    }  # fmt: skip


@pytest.mark.parametrize(("kind", "preset", "setting"), NOT_NULLABLE)
def test_none_for_a_setting_without_an_off_is_refused_naming_it(kind, preset, setting):
    torch.manual_seed(0)
    model = DiffusionModel(ModelConfig(kind=kind, hidden_dim=8, num_timesteps=20)).eval()
    c = [1] if kind == "class" else None
    with pytest.raises(ConfigError, match=f"{setting} needs a value") as error:
        model.sample(c, n=None if c else 1, preset=preset, **{setting: None})
    assert error.value.setting == setting and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def shipped_time_model():
    from diffumnist import load_pretrained

    return load_pretrained("time")


def _switched_off(model, c, n, preset, setting, **given):
    """(samples with `setting=None` given to sample, samples of the preset's config with
    that setting None, samples of the preset itself); the `given` settings in all three."""
    common = {"n": n, "img_wh": (28, 28)}
    given = {"precision": "fp32", "seed": 1, **given}
    config = PRESETS[model.config.kind][preset].replace(**given)
    off, _ = model.sample(c, preset=preset, **{setting: None}, **given, **common)
    expected, _ = model.generate(c, dataclasses.replace(config, **{setting: None}), **common)
    kept, _ = model.generate(c, config, **common)
    return off, expected, kept


@pytest.mark.parametrize(
    ("kind", "preset", "setting"), [case for case in NULLABLE if case[0] == "class"]
)
def test_none_switches_the_class_presets_value_off(tiny_class_model, kind, preset, setting):
    # The tiny model's digits are illegible: the preset's filter redraws each of them ten
    # times, so the other cases keep every draw, and this one takes few steps.
    given = {"steps": 3} if setting == "reject_below" else {"reject_below": None}
    off, expected, kept = _switched_off(tiny_class_model, [3, 7], None, preset, setting, **given)
    assert torch.equal(off, expected)
    if setting == "reject_below":
        assert not torch.equal(off, kept)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "preset", "setting"), [case for case in NULLABLE if case[0] == "time"]
)
def test_none_switches_the_time_presets_value_off(shipped_time_model, kind, preset, setting):
    """On the shipped time model (its guide, the weak twin, ships too): `guide=None`
    samples without the guide, `guidance_interval=None` guides at every step, and so on."""
    off, expected, kept = _switched_off(shipped_time_model, None, 2, preset, setting)
    assert torch.equal(off, expected)
    if setting in ("guide", "guidance_interval"):
        assert not torch.equal(off, kept)


def test_guide_none_samples_the_time_preset_without_its_guide(make_checkpoint):
    """The claim above, fast: a tiny time model (T = 300, so the preset's interval fits) that
    the shipped weak twin can guide."""
    from diffumnist import load

    model = load(make_checkpoint("time", hidden_dim=8, num_timesteps=300))
    given = {"steps": 3, "reject_below": None, "seed": 1}
    guided, _ = model.sample(n=2, preset="fast", **given)
    off, _ = model.sample(n=2, preset="fast", guide=None, **given)
    plain = PRESETS["time"]["fast"].replace(guide=None, **given)
    expected, _ = model.generate(None, plain, n=2)
    assert torch.equal(off, expected) and not torch.equal(off, guided)
