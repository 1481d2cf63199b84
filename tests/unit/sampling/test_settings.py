"""The settings object: each setting declared once, checked alone from its declaration and
together in one method, refused in one line that names it; a new field reaches every surface.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffumnist.cli import main
from diffumnist.config import ConfigError
from diffumnist.sampling import NOT_GIVEN, SETTING_NAMES, SETTINGS, SamplingConfig

SOURCE = Path(__file__).resolve().parents[3] / "src" / "diffumnist"


def refused(setting: str, match: str | None = None, **values) -> ConfigError:
    """The one-line ConfigError naming `setting` that SamplingConfig(**values) raises."""
    with pytest.raises(ConfigError, match=match) as error:
        SamplingConfig(**values)
    assert error.value.setting == setting, error.value
    assert "\n" not in str(error.value)
    return error.value


def test_the_defaults_are_the_recipe():
    config = SamplingConfig()
    assert (config.sampler, config.steps, config.guidance_scale) == ("ddpm", None, 5.0)
    assert (config.guidance_interval, config.guide, config.reject_below) == (None, None, None)
    assert (config.start, config.clip_x0, config.seed) == ("noise", False, 0)
    assert config.num_steps(300) == 300 and config.describe() == "ddpm, γ = 5, seed 0"


def test_every_field_is_a_declared_setting():
    assert [spec.name for spec in SETTINGS] == [
        "sampler", "steps", "eta", "spacing", "guidance_scale", "guidance_interval", "guide",
        "start", "clip_x0", "reject_below", "seed", "precision",
    ]  # fmt: skip
    assert set(SamplingConfig.__dataclass_fields__) == SETTING_NAMES
    for spec in SETTINGS:
        assert spec.help and spec.default == getattr(SamplingConfig(), spec.name)
        described = spec.describe()
        assert described["name"] == spec.name and described["help"] == spec.help
    nullable = {spec.name for spec in SETTINGS if spec.nullable}
    assert nullable == {"steps", "guidance_interval", "guide", "reject_below"}


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("guidance_scale", -1, "guidance_scale must be at least 0"),
        ("guidance_scale", math.nan, "finite number"),
        ("guidance_scale", math.inf, "finite number"),
        ("guidance_scale", "5", "finite number"),
        ("reject_below", 0, "strictly between 0 and 1"),
        ("reject_below", 1, "strictly between 0 and 1"),
        ("reject_below", 1.5, "strictly between 0 and 1"),
        ("reject_below", -0.2, "strictly between 0 and 1"),
        ("reject_below", math.nan, "finite number"),
        ("reject_below", "0.9", "finite number"),
        ("reject_below", True, "finite number"),
        ("eta", 1.5, "eta must be from 0 to 1"),
        ("eta", -0.1, "eta must be from 0 to 1"),
        ("seed", -1, "seed must be from 0 to 4294967295"),
        ("seed", 2**32, "seed must be from 0"),
        ("seed", 1.5, "whole number"),
        ("steps", 0, "steps must be at least 1"),
        ("steps", 2.5, "whole number"),
        ("steps", True, "whole number"),
        ("sampler", "euler", "sampler must be one of ddpm, ddim, dpmpp"),
        ("sampler", "DDIM", "sampler must be one of"),
        ("start", "zeros", "start must be one of noise, mean"),
        ("spacing", "karras", r"spacing must be one of .*trailing.*logsnr"),
        ("precision", "fp64", "precision must be one of"),
        ("clip_x0", "yes", "clip_x0 must be true or false"),
        ("guide", "", "guide must be a name"),
        ("guide", 3, "guide must be a name"),
        ("guidance_interval", (180, 30), "LO < HI"),
        ("guidance_interval", (-1, 30), "LO >= 0"),
        ("guidance_interval", (1.5, 30), "whole timesteps"),
        ("guidance_interval", (30,), "two whole"),
        ("guidance_interval", "30,180", "two whole"),
    ],
)
def test_values_outside_the_declaration_are_refused_naming_the_setting(setting, value, match):
    sampler = {"sampler": "ddim"} if setting in ("eta", "spacing") else {}
    refused(setting, match, **{**sampler, setting: value})


def test_values_inside_the_declaration_are_kept_in_canonical_form():
    config = SamplingConfig(
        sampler="dpmpp", steps=4, eta=1, guidance_scale=0, guidance_interval=[3, 12],
        guide=Path("some.safetensors"), reject_below=0.5, seed=2**32 - 1,
    )  # fmt: skip
    assert config.guidance_interval == (3, 12) and config.guide == "some.safetensors"
    assert config.eta == 1 and config.guidance_scale == 0 and config.seed == 2**32 - 1


@pytest.mark.parametrize(("setting", "value"), [("eta", 0.5), ("spacing", "logsnr")])
def test_the_fast_samplers_knobs_are_refused_with_ddpm(setting, value):
    refused(setting, f"{setting} applies to the ddim and dpmpp samplers", **{setting: value})
    assert getattr(SamplingConfig(sampler="dpmpp", **{setting: value}), setting) == value


def test_none_switches_off_only_the_settings_that_admit_it():
    for spec in SETTINGS:
        if spec.nullable:
            assert getattr(SamplingConfig(**{spec.name: None}), spec.name) is None
        else:
            refused(spec.name, f"{spec.name} needs a value", **{spec.name: None})


def test_checks_against_the_model_name_the_setting():
    ddpm_steps = SamplingConfig(sampler="ddpm", steps=10)
    with pytest.raises(ConfigError, match="ddpm always takes all T=20 steps") as error:
        ddpm_steps.check(20)
    assert error.value.setting == "steps"
    assert SamplingConfig(sampler="ddpm", steps=20).num_steps(20) == 20
    with pytest.raises(ConfigError, match=r"1\.\.20") as error:
        SamplingConfig(sampler="ddim", steps=21).check(20)
    assert error.value.setting == "steps"
    with pytest.raises(ConfigError, match=r"within 0\.\.20") as error:
        SamplingConfig(guidance_interval=(5, 30)).check(20)
    assert error.value.setting == "guidance_interval"
    with pytest.raises(ConfigError, match="reject_below reads 28x28 digits only") as error:
        SamplingConfig(reject_below=0.9).check(20, (56, 28))
    assert error.value.setting == "reject_below"
    assert SamplingConfig(sampler="dpmpp").num_steps(300) == 20
    assert SamplingConfig(sampler="ddim").num_steps(30) == 30  # the default, capped at T


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "euler"},
        {"sampler": "DDIM"},
        {"sampler": "ddpm", "steps": 10},
        {"sampler": "ddim", "steps": 0},
        {"sampler": "ddim", "steps": 21},
        {"sampler": "dpmpp", "steps": -3},
        {"sampler": "dpmpp", "steps": 2.5},
        {"sampler": "dpmpp", "steps": True},
        {"sampler": "ddim", "steps": 5, "eta": -0.1},
        {"sampler": "ddim", "steps": 5, "eta": 1.5},
        {"sampler": "ddim", "steps": 5, "eta": math.nan},
        {"sampler": "dpmpp", "steps": 5, "eta": 1.5},  # dpmpp takes η in [0, 1] (its SDE)
        {"sampler": "ddpm", "eta": 1.0},
        {"guidance_scale": -1},
        {"guidance_scale": math.nan},
        {"seed": -1},
        {"guidance_interval": (5, 30)},
        {"wobble": 1},
    ],
)
def test_bad_sampler_requests_are_one_line_errors_naming_the_setting(tiny_class_model, kwargs):
    with pytest.raises(ConfigError) as error:
        tiny_class_model.sample([1], **kwargs)
    assert "\n" not in str(error.value)
    assert error.value.setting in kwargs, (error.value.setting, kwargs)


def test_a_bad_sampler_name_lists_the_valid_ones(tiny_class_model):
    with pytest.raises(ConfigError, match="ddpm, ddim, dpmpp"):
        tiny_class_model.sample([1], sampler="plms")


def test_an_unknown_setting_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown sampling setting.*: wobble; valid: clip_x0"):
        SamplingConfig().replace(wobble=1)


def test_replace_ignores_what_is_not_given_and_a_new_sampler_resets_its_knobs():
    logsnr = SamplingConfig(sampler="dpmpp", steps=20, eta=1.0, spacing="logsnr", seed=4)
    assert logsnr.replace(eta=NOT_GIVEN, seed=NOT_GIVEN) == logsnr
    # a preset's spacing never makes `--sampler ddpm` an error
    assert logsnr.replace(sampler="ddpm") == SamplingConfig(sampler="ddpm", seed=4)
    assert logsnr.replace(sampler="ddim").spacing == "trailing"
    assert logsnr.replace(sampler="ddim", spacing="logsnr").spacing == "logsnr"
    assert logsnr.replace(sampler="dpmpp") == logsnr  # the same sampler keeps them


def test_describe_shows_what_differs_from_the_recipe():
    assert "from the mean digit" in SamplingConfig(start="mean").describe()
    logsnr = SamplingConfig(sampler="dpmpp", steps=20, eta=1.0, spacing="logsnr")
    assert logsnr.describe() == "dpmpp 20 steps, γ = 5, η = 1, logsnr spacing, seed 0"
    assert "spacing" not in logsnr.replace(spacing="trailing").describe()
    guided = SamplingConfig(guidance_interval=(30, 180), guide="weak", reject_below=0.9)
    assert guided.describe(with_seed=False) == (
        "ddpm, γ = 5 for 30 < t <= 180 from the weak guide, redrawn below p = 0.9"
    )
    assert SamplingConfig(clip_x0=True).describe(guided=False) == "ddpm, x̂0 clipped, seed 0"


def test_to_dict_is_json_ready():
    data = SamplingConfig(guidance_interval=(3, 12)).to_dict()
    assert data["guidance_interval"] == [3, 12] and set(data) == SETTING_NAMES
    assert SamplingConfig(**data) == SamplingConfig(guidance_interval=(3, 12))


def test_a_flag_outside_the_declared_range_is_refused_at_parse_time(capsys, tmp_path):
    """No model is loaded (the checkpoint does not exist): argparse refuses the value."""
    argv = ["sample", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "g.png")]
    assert main([*argv, "--guidance-scale", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffumnist: error:"), err
    assert "--guidance-scale" in err and "guidance_scale must be at least 0" in err
    assert not (tmp_path / "g.png").exists()


PROBE_FIELD = (
    '    probe_knob: float = dataclasses.field(default=0.25, metadata={"help": "a probe"})\n'
)
PROBE_CHECKS = textwrap.dedent(
    """
    import diffumnist
    from diffumnist import webrequests
    from diffumnist.config import ModelConfig
    from diffumnist.models import DiffusionModel
    from diffumnist.sampling import SamplingConfig

    assert diffumnist.__file__.startswith({copy!r}), diffumnist.__file__
    settings = {{s["name"]: s for s in webrequests.form_info(20)["settings"]}}
    assert settings["probe_knob"]["help"] == "a probe", settings["probe_knob"]
    assert settings["probe_knob"]["default"] == 0.25
    model = DiffusionModel(ModelConfig(kind="class", hidden_dim=8, num_timesteps=20))
    samples, _ = model.sample([1], sampler="dpmpp", steps=2, probe_knob=0.5)
    assert samples.shape == (1, 1, 28, 28)
    described = SamplingConfig(probe_knob=0.5).describe()
    assert "probe_knob" in described, described
    assert "probe_knob" not in SamplingConfig().describe()
    print("probe ok")
    """
)


def test_a_setting_declared_once_reaches_every_surface(tmp_path):
    """One plain field added to SamplingConfig (a type, a default, a help text) appears with
    no other edit in `diffumnist sample --help`, the page's /api/info, `model.sample`'s
    keywords and describe()."""
    copy = tmp_path / "src"
    shutil.copytree(SOURCE, copy / "diffumnist", ignore=shutil.ignore_patterns("__pycache__"))
    settings = copy / "diffumnist" / "sampling" / "settings.py"
    source = settings.read_text(encoding="utf-8")
    anchor = "    def __post_init__(self) -> None:\n"
    assert source.count(anchor) == 1
    settings.write_text(source.replace(anchor, PROBE_FIELD + "\n" + anchor), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    help_text = run("-m", "diffumnist", "sample", "--help")
    assert "--probe-knob" in help_text and "a probe" in help_text
    assert "probe ok" in run("-c", PROBE_CHECKS.format(copy=str(copy)))
