"""The page's requests: the form is described from the settings' declarations, and a
request's sampling settings are checked by SamplingConfig, starting from the page's preset
(a null switches a preset's value off where the setting admits None)."""

from __future__ import annotations

import pytest

from diffumnist.config import ConfigError
from diffumnist.sampling import PRESETS, SETTINGS
from diffumnist.webrequests import PAGE_PRESET, PAGE_SETTINGS, form_info, parse_generate


def test_the_form_offers_every_setting_the_page_may_send_as_declared():
    info = form_info(300)
    described = {setting["name"]: setting for setting in info["settings"]}
    assert tuple(described) == PAGE_SETTINGS
    assert set(PAGE_SETTINGS) == {spec.name for spec in SETTINGS} - {"precision"}
    # as declared, with the bounds that depend on the model's T filled in, and the guide a
    # choice of the shipped weak twin (the page never names files)
    page_only = {"steps": {"min", "max"}, "guidance_interval": {"min", "max"},
                 "guide": {"type", "choices"}}  # fmt: skip
    for spec in SETTINGS:
        if spec.name in described:
            skip = page_only.get(spec.name, set())
            declared = {k: v for k, v in spec.describe().items() if k not in skip}
            assert {k: v for k, v in described[spec.name].items() if k not in skip} == declared
    assert described["steps"]["max"] == described["guidance_interval"]["max"] == 300
    assert described["guide"]["choices"] == ["weak"]
    assert described["reject_below"]["min"] == 0 and described["reject_below"]["exclusive"]
    assert described["eta"]["samplers"] == ["ddim", "dpmpp"]
    assert info["default_steps"] == {"ddpm": 300, "ddim": 50, "dpmpp": 20}
    assert set(info["presets"]["class"]) == {"recipe", "fast"}


def test_a_request_starts_from_the_pages_preset():
    request = parse_generate({"digits": [1, 2]}, num_timesteps=300)
    assert request.digits == (1, 2)
    assert request.sampling == PRESETS["class"][PAGE_PRESET].replace(steps=20)


def test_the_page_sends_a_threshold_or_none():
    request = parse_generate({"digits": [1], "reject_below": 0.8}, num_timesteps=300)
    assert request.sampling.reject_below == 0.8
    off = parse_generate({"digits": [1], "reject_below": None}, num_timesteps=300)
    assert off.sampling.reject_below is None
    with pytest.raises(ConfigError, match="reject_below must be strictly between") as error:
        parse_generate({"digits": [1], "reject_below": 1}, num_timesteps=300)
    assert error.value.setting == "reject_below"


def test_a_null_is_refused_where_a_setting_has_no_off():
    with pytest.raises(ConfigError, match="guidance_scale needs a value") as error:
        parse_generate({"digits": [1], "guidance_scale": None}, num_timesteps=300)
    assert error.value.setting == "guidance_scale"


def test_the_page_may_not_name_files_as_guides():
    with pytest.raises(ConfigError, match="guide must be null") as error:
        parse_generate({"digits": [1], "guide": "/etc/passwd"}, num_timesteps=300)
    assert error.value.setting == "guide"
    with pytest.raises(ConfigError, match="guide must be null for the class model"):
        parse_generate({"digits": [1], "guide": "weak"}, num_timesteps=300)


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match=r"unknown field.*: precision"):
        parse_generate({"digits": [1], "precision": "fp32"}, num_timesteps=300)
