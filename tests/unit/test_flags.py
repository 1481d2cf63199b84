"""The CLI's sampling flags, made from the settings' declarations: each flag given wins over
the preset, 'none' switches a preset's value off, and values outside a setting's declared
range are refused at parse time in one line (exit code 2)."""

from __future__ import annotations

import argparse

import pytest

from diffumnist.cli import main
from diffumnist.flags import Parser, add_sampling_flags
from diffumnist.sampling import SETTINGS


def sampling_parser(seed: int | None = 0) -> Parser:
    parser = Parser(prog="diffumnist")
    add_sampling_flags(parser, seed=seed)
    return parser


def test_every_setting_has_a_flag_and_only_given_flags_are_read():
    parser = sampling_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for spec in SETTINGS:
        assert "--" + spec.name.replace("_", "-") in flags, spec.name
    args = vars(parser.parse_args(["--eta", "0.5"]))
    assert args == {"preset": "recipe", "eta": 0.5, "seed": 0}  # the rest: the preset's
    assert "--seed" not in {o for a in sampling_parser(None)._actions for o in a.option_strings}


def test_none_is_a_value_only_for_settings_that_admit_it():
    parser = sampling_parser()
    args = parser.parse_args(["--reject-below", "none", "--guide", "none", "--steps", "none"])
    assert (args.reject_below, args.guide, args.steps) == (None, None, None)
    assert parser.parse_args(["--guidance-interval", "none"]).guidance_interval is None
    assert parser.parse_args(["--guidance-interval", "3,12"]).guidance_interval == (3, 12)
    assert parser.parse_args(["--no-clip-x0"]).clip_x0 is False


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--guidance-scale", "-1", "guidance_scale must be at least 0"),
        ("--guidance-scale", "none", "must be a finite number"),
        ("--eta", "1.5", "eta must be from 0 to 1"),
        ("--reject-below", "1", "reject_below must be strictly between 0 and 1"),
        ("--seed", "-1", "seed must be from 0 to"),
        ("--steps", "0", "steps must be at least 1"),
        ("--sampler", "euler", "invalid choice"),
    ],
)
def test_values_outside_the_declaration_are_refused_at_parse_time(flag, value, message):
    with pytest.raises(Exception, match=message) as error:
        sampling_parser().parse_args([flag, value])
    assert "\n" not in str(error.value)
    assert not isinstance(error.value, argparse.ArgumentTypeError)  # reported, not raised


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


def test_a_flag_outside_its_range_is_refused_before_any_work(capsys, tmp_path):
    """The checkpoint does not exist: argparse refuses the value before it is looked for."""
    argv = ["sample", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "g.png")]
    for flag, value in (("--guidance-scale", "-1"), ("--eta", "1.5"), ("--seed", "-1")):
        assert main([*argv, flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("diffumnist: error:"), err
        assert flag in err and "missing" not in err
