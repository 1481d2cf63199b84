"""The command line: outputs in the exchange format, and one-line errors with exit 2."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from diffumnist.cli import main, parse_digits


@pytest.fixture
def class_ckpt(make_checkpoint):
    return make_checkpoint("class", hidden_dim=8, num_timesteps=10)


@pytest.fixture
def denoiser_ckpt(make_checkpoint):
    return make_checkpoint("denoiser")


def test_sample_writes_grid_gif_and_npz(tmp_path, class_ckpt):
    out = tmp_path / "grid.png"
    argv = [
        "sample",
        str(class_ckpt),
        "--digits",
        "1,3",
        "--per-digit",
        "2",
        "--out",
        str(out),
        "--gif",
        str(tmp_path / "p.gif"),
        "--npz",
        str(tmp_path / "s.npz"),
        "--device",
        "cpu",
        "--preset",
        "recipe",
    ]
    assert main(argv) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "p.gif").read_bytes()[:3] == b"GIF"
    npz = np.load(tmp_path / "s.npz")
    assert npz["images"].shape == (4, 28, 28) and npz["images"].dtype == np.uint8
    assert sorted(npz["labels"].tolist()) == [1, 1, 3, 3]


def test_digit_ranges_parse():
    assert parse_digits("0-9") == list(range(10))
    assert parse_digits("0-2,7") == [0, 1, 2, 7]


@pytest.mark.parametrize(
    "extra",
    [
        ["--digits", "10"],
        ["--digits", "a"],
        ["--digits", "5-3"],
        ["--guidance-scale", "nan"],
        ["--guidance-scale", "inf"],
        ["--per-digit", "0"],
        ["--per-digit", "-3"],
        ["--device", "tpu"],
        ["--bogus-flag"],
    ],
)
def test_bad_sample_input_is_one_line_and_exit_2(capsys, class_ckpt, tmp_path, extra):
    code = main(["sample", str(class_ckpt), "--out", str(tmp_path / "g.png"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("diffumnist: error:") and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()


def test_bad_checkpoints_are_refused(capsys, tmp_path, denoiser_ckpt):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 100)
    for path in (tmp_path / "missing.safetensors", corrupt, denoiser_ckpt):
        assert main(["sample", str(path), "--out", str(tmp_path / "g.png")]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_unwritable_output_folder_is_refused_before_work(capsys, class_ckpt, tmp_path):
    code = main(["sample", str(class_ckpt), "--out", str(tmp_path / "no" / "such" / "g.png")])
    assert code == 2 and "cannot write" in capsys.readouterr().err


def test_existing_output_survives_a_failed_run(class_ckpt, tmp_path):
    out = tmp_path / "g.png"
    out.write_bytes(b"precious")
    assert main(["sample", str(class_ckpt), "--out", str(out), "--digits", "12"]) == 2
    assert out.read_bytes() == b"precious"


def test_train_refuses_to_overwrite_a_run_and_bad_values(capsys, tmp_path, data_dir):
    run = tmp_path / "run"
    argv = [
        "train",
        "class",
        "--out",
        str(run),
        "--hidden-dim",
        "4",
        "--max-steps",
        "1",
        "--subset",
        "64",
        "--num-timesteps",
        "5",
        "--preview-every",
        "0",
        "--data-dir",
        str(data_dir),
    ]
    assert main(argv) == 0
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main(["train", "class", "--out", str(run), "--resume", "--lr", "1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    extend = ["train", "class", "--out", str(run), "--resume", "--epochs"]
    assert main([*extend, "30", "--lr", "1"]) == 2 and "drop --lr" in capsys.readouterr().err
    assert main([*extend, "1"]) == 2  # the run has 20 epochs: --epochs only extends it
    assert "can only extend the run; it has 20" in capsys.readouterr().err
    assert '"epochs": 20' in (run / "config.json").read_text()
    for bad in (["--lr", "-1"], ["--precision", "fp8"], ["--epochs", "0"], ["--lr", "nan"]):
        assert main(["train", "time", "--out", str(tmp_path / "other"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_train_prints_how_to_sample_guided_by_the_twin_it_kept(capsys, tmp_path, data_dir):
    run = tmp_path / "run"
    small = ["--hidden-dim", "4", "--batch-size", "32", "--subset", "64", "--num-timesteps", "5"]
    argv = ["train", "class", "--preset", "fast", "--epochs", "2", "--out", str(run), *small,
            "--preview-every", "0", "--data-dir", str(data_dir)]  # fmt: skip
    assert main(argv) == 0
    twin = run / "twin.safetensors"
    assert twin.exists()
    flags = f"--guide {twin} --guidance-scale 1.5 --guidance-interval 100,300"
    assert f"diffumnist sample {run / 'last.safetensors'} {flags}" in capsys.readouterr().out


def test_missing_mnist_is_one_line(capsys, tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    code = main(
        ["train", "class", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path / "nodata")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "DIFFUMNIST_DATA" in err and err.count("\n") == 1


def test_console_entry_point_runs(class_ckpt, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "diffumnist", "sample", str(class_ckpt), "--digits", "99"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "diffumnist: error: --digits must be digits 0-9 like 0-9, 3 or 1,3,5; got '99'"
    ]


def test_sample_without_checkpoint_uses_the_shipped_model(tmp_path):
    out = tmp_path / "g.png"
    argv = ["sample", "--digits", "3", "--per-digit", "1", "--sampler", "dpmpp", "--steps", "5",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_sample_takes_a_model_beyond_the_recipe_by_name(tmp_path):
    """`time_e34` names a shipped file; with --preset fast its kind's weak twin guides it."""
    out = tmp_path / "g.png"
    argv = ["sample", "time_e34", "--n", "2", "--preset", "fast", "--steps", "3",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra", [["--sampler", "euler"], ["--steps", "0"], ["--eta", "nan"]])
def test_bad_sampler_settings_are_one_line(capsys, tmp_path, extra):
    assert main(["sample", "--out", str(tmp_path / "g.png"), *extra]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_eval_scores_a_sample_file_and_writes_json(capsys, tmp_path, data_dir):
    import json

    from diffumnist.data import load_split
    from diffumnist.evaluate import save_npz

    images, labels = load_split("test", data_dir)
    samples = tmp_path / "real.npz"
    samples.write_bytes(save_npz(images[:300], labels[:300]))
    report = tmp_path / "scores.json"
    argv = ["eval", "--samples", str(samples), "--json", str(report), "--data-dir", str(data_dir)]
    assert main(argv) == 0
    assert "MNIST-FID" in capsys.readouterr().out
    assert json.loads(report.read_text())["n"] == 300
    assert main(["eval"]) == 2


def test_a_bare_call_prints_the_usage_and_exit_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: diffumnist") and all(
        command in out for command in ("train", "sample", "eval", "demo", "figures", "ui")
    )
    assert "thin wrappers" not in out


def test_version_names_the_package_and_torch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith("diffumnist 0.") and "torch 2." in out


@pytest.mark.parametrize("command", ["train", "sample", "eval", "demo", "figures", "ui"])
def test_every_help_shows_defaults(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default:" in text
    if command in ("sample", "eval"):  # sample starts where the page does; eval at the recipe
        default = "fast" if command == "sample" else "recipe"
        assert "--preset {recipe,fast,best}" in text and f"(default: {default})" in text
        assert "default: all T" not in text  # ddpm takes all T; ddim and dpmpp their own default
        assert "(LO, HI]" in text  # the guidance interval says its unit


def test_sample_offers_only_models_that_sample(capsys, denoiser_ckpt, tmp_path):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "time/class/time_e34/class_cpu for the shipped models" in help_text
    assert "denoiser" not in help_text
    assert main(["sample", "denoiser", "--out", str(tmp_path / "g.png")]) == 2
    assert "cannot sample" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "magic"),
    [("g.jpg", b"\xff\xd8"), ("g.JPEG", b"\xff\xd8"), ("g.png", b"\x89PNG"), ("g.webp", b"RIFF")],
)
def test_the_grid_is_written_in_the_format_its_name_asks_for(class_ckpt, tmp_path, name, magic):
    out = tmp_path / name
    argv = ["sample", str(class_ckpt), "--digits", "1", "--per-digit", "1", "--out", str(out),
            "--sampler", "dpmpp", "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0 and out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["g.gif", "g.svg", "grid", "g.png.txt"])
def test_a_grid_name_of_an_unknown_format_is_refused(capsys, class_ckpt, tmp_path, name):
    argv = ["sample", str(class_ckpt), "--out", str(tmp_path / name), "--steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the name must end in one of .png" in err
    assert not (tmp_path / name).exists()


def test_a_gif_must_be_named_gif(capsys, class_ckpt, tmp_path):
    argv = ["sample", str(class_ckpt), "--out", str(tmp_path / "g.png"), "--gif",
            str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 2 and "must end in .gif" in capsys.readouterr().err


@pytest.mark.parametrize(("digits", "per_digit", "rows", "columns"),
                         [("3", 4, 1, 4), ("1,2", 3, 2, 3), ("0-9", 1, 1, 10)])  # fmt: skip
def test_grids_are_digits_by_samples(class_ckpt, tmp_path, digits, per_digit, rows, columns):
    """One row per digit, one column per sample (a single sample each: one row)."""
    from PIL import Image

    out = tmp_path / "g.png"
    argv = ["sample", str(class_ckpt), "--digits", digits, "--per-digit", str(per_digit),
            "--out", str(out), "--scale", "1", "--sampler", "dpmpp", "--steps", "2",
            "--npz", str(tmp_path / "s.npz")]  # fmt: skip
    assert main(argv) == 0
    width, height = Image.open(out).size
    assert (width, height) == (2 + 30 * columns, 2 + 30 * rows)  # 28 px tiles, 2 px padding
    labels = np.load(tmp_path / "s.npz")["labels"].tolist()
    assert labels == [d for d in parse_digits(digits) for _ in range(per_digit)]


def test_sample_says_which_settings_it_used(capsys, class_ckpt, tmp_path):
    out = str(tmp_path / "g.png")
    argv = ["sample", str(class_ckpt), "--digits", "1", "--out", out, "--preset", "fast",
            "--steps", "4", "--guidance-interval", "1,8", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    said_precision, line = capsys.readouterr().out.splitlines()[:2]
    assert said_precision.startswith("precision: ")
    assert line.startswith(
        "sampling: dpmpp 4 steps, γ = 1 for 1 < t <= 8, η = 1, from the mean digit, "
        "redrawn below p = 0.97, seed 3, "
    )
    assert line.endswith(("bf16", "fp32"))


def test_clip_x0_is_a_flag_both_ways(capsys, class_ckpt, tmp_path):
    """--clip-x0 turns clipping on, --no-clip-x0 off (over a preset's setting)."""
    argv = ["sample", str(class_ckpt), "--digits", "1", "--out", str(tmp_path / "g.png"),
            "--preset", "fast", "--steps", "4", "--guidance-interval", "1,8"]  # fmt: skip
    said = {}
    for flag in ("--clip-x0", "--no-clip-x0"):
        assert main([*argv, flag]) == 0
        said[flag] = capsys.readouterr().out.splitlines()[1]
    assert "x̂0 clipped" in said["--clip-x0"] and "x̂0 clipped" not in said["--no-clip-x0"]


def test_spacing_is_a_choice_of_the_fast_samplers(capsys, class_ckpt, tmp_path):
    argv = ["sample", str(class_ckpt), "--digits", "1", "--out", str(tmp_path / "g.png"),
            "--sampler", "dpmpp", "--steps", "4"]  # fmt: skip
    assert main([*argv, "--spacing", "logsnr"]) == 0
    assert "logsnr spacing" in capsys.readouterr().out.splitlines()[1]
    assert main([*argv, "--spacing", "karras"]) == 2
    assert "invalid choice: 'karras'" in capsys.readouterr().err
    assert main([*argv[:-4], "--sampler", "ddpm", "--spacing", "logsnr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "spacing applies to the ddim and dpmpp samplers" in err


def test_the_time_model_gets_its_own_preset(capsys, make_checkpoint, tmp_path):
    ckpt = make_checkpoint("time", hidden_dim=8, num_timesteps=10)
    guide = make_checkpoint("time", hidden_dim=4, num_timesteps=10)
    argv = ["sample", str(ckpt), "--n", "1", "--out", str(tmp_path / "g.png"), "--preset",
            "fast", "--steps", "4", "--seed", "3", "--reject-below", "none"]  # fmt: skip
    # the preset's interval (100 < t <= 300) is in the shipped models' timesteps: T = 10 here
    assert main(argv) == 2
    assert "guidance_interval must lie within 0..10 (T)" in capsys.readouterr().err
    assert main([*argv, "--guidance-interval", "none", "--guide", "none"]) == 0  # every step
    assert "for 100 < t" not in capsys.readouterr().out
    argv += ["--guidance-interval", "5,10"]
    assert main([*argv, "--guide", str(guide)]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith(
        f"sampling: dpmpp 4 steps, γ = 1.5 for 5 < t <= 10 from the {guide} guide, η = 1, "
        "logsnr spacing, from the mean"
    )
    assert main([*argv, "--guide", "none"]) == 2  # no guide: nothing for γ to act on, refused
    err = capsys.readouterr().err
    assert "--guidance-interval needs a guide for the time model" in err and err.count("\n") == 1
    # the preset's shipped weak twin guides only models of its T (300): one line, exit 2
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "must match the model it guides" in err and err.count("\n") == 1


@pytest.mark.parametrize("interval", ["8,1", "1", "a,b", "-1,5", "1,99"])
def test_bad_guidance_intervals_are_one_line_and_exit_2(capsys, class_ckpt, tmp_path, interval):
    argv = ["sample", str(class_ckpt), "--out", str(tmp_path / "g.png"),
            "--guidance-interval", interval]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "guidance" in err and not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "clas"], "shipped model (denoiser, time, class, time_e34, class_cpu)"),
        (["sample", "--out", "/proc/x.png"], "cannot write /proc/x.png"),
        (["sample", "--gif", "/proc/g.gif"], "cannot write /proc/g.gif"),
        (["sample", "--npz", "n.txt"], "--npz n.txt: the name must end in .npz"),
        (["sample", "--per-digit", "9223372036854775808"], "--per-digit: must be at most"),
        (["sample", "--guidance-scale", "-1"], "guidance_scale must be at least 0"),
        (["ui", "--port", "99999"], "--port: must be a port number 1-65535"),
    ],
)
def test_mistakes_are_one_line_before_torch_is_imported(argv, message):
    """Each mistake is one line and exit 2, found before any heavy import (so at once)."""
    code = (
        "import sys\nfrom diffumnist.cli import main\ncode = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("kind", "flags", "message"),
    [
        ("time", ["--digits", "3"], "--digits does not apply to the time model"),
        ("class", ["--n", "5"], "--n does not apply to the class model"),
        ("time", ["--guidance-scale", "3", "--preset", "recipe"], "needs a guide"),
    ],
)
def test_settings_a_model_would_ignore_are_refused(capsys, make_checkpoint, kind, flags, message):
    ckpt = make_checkpoint(kind, hidden_dim=4, num_timesteps=5)
    assert main(["sample", str(ckpt), "--out", "/tmp/never.png", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sample_shows_progress_on_a_terminal(class_ckpt, tmp_path):
    """With stderr on a (pseudo-)terminal the sampler's steps show as a tqdm bar there."""
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    argv = [sys.executable, "-m", "diffumnist", "sample", str(class_ckpt), "--digits", "1",
            "--per-digit", "1", "--preset", "recipe", "--out", str(tmp_path / "g.png")]  # fmt: skip
    done = subprocess.run(argv, stderr=secondary, stdout=subprocess.PIPE, timeout=300)
    os.close(secondary)
    seen = b""
    while select.select([primary], [], [], 0.5)[0]:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert done.returncode == 0
    assert b"sampling" in seen and b"10/10" in seen, seen[-400:]
