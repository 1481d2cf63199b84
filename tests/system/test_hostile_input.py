"""Hostile input: files that would run code, random flags and values, oversized requests.

Every refusal must be a ConfigError (exit 2 and one line from the CLI): never an unpickled
payload, another exception, a hang, or an allocation that ends in an out-of-memory kill.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import LONG_TESTS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from diffumnist import cli, commands, evaluate
from diffumnist.checkpoint import CheckpointError
from diffumnist.config import ConfigError, ModelConfig
from diffumnist.models import DiffusionModel, load
from diffumnist.sampling import MAX_SAMPLES_PER_CALL

FUZZ = settings(
    max_examples=1000 if LONG_TESTS else 150,
    deadline=60_000,  # a hang fails the case; generous, since CI machines are shared and busy
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same 150 cases on every run, so CI cannot flake
)


class Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _pickles(folder: Path, marker: Path) -> list[Path]:
    """The payload as torch.save (zip), legacy torch.save and a raw pickle, named as ours."""
    files = [folder / "zip.safetensors", folder / "legacy.safetensors", folder / "raw.pt"]
    torch.save({"model": Payload(marker)}, files[0])
    torch.save({"model": Payload(marker)}, files[1], _use_new_zipfile_serialization=False)
    files[2].write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return files


def test_crafted_pickles_are_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    files = _pickles(tmp_path, marker)
    pickle.loads(files[2].read_bytes())  # the payload is live: unpickling runs it
    assert marker.is_dir()
    marker.rmdir()
    for path in files:
        with pytest.raises(CheckpointError, match="pickle"):
            load(path)
        assert cli.main(["sample", str(path), "--out", str(tmp_path / "g.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "never unpickles" in err, err
    assert not marker.exists()


def test_resume_refuses_a_pickle_put_in_place_of_the_checkpoint(tmp_path, capsys, data_dir):
    run = tmp_path / "run"
    argv = ["train", "class", "--out", str(run), "--hidden-dim", "4", "--num-timesteps", "5",
            "--subset", "64", "--max-steps", "1", "--preview-every", "0",
            "--data-dir", str(data_dir)]  # fmt: skip
    assert cli.main(argv) == 0
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, run / "last.safetensors")
    capsys.readouterr()
    assert cli.main(["train", "class", "--out", str(run), "--resume"]) == 2
    assert "never unpickles" in capsys.readouterr().err and not marker.exists()


def test_checkpoint_asking_for_a_huge_network_is_refused(tmp_path):
    """A header may claim any size; building it would exhaust memory before weights load."""
    path = tmp_path / "huge.safetensors"
    header = {"model_config": {"kind": "class", "hidden_dim": 10**6}, "meta": {}}
    metadata = {"format": "diffumnist/1", "header": json.dumps(header)}
    save_file({"model.x": torch.zeros(1)}, path, metadata)
    with pytest.raises(CheckpointError, match="hidden_dim must be <= "):
        load(path)


@pytest.fixture
def time_ckpt(make_checkpoint):
    return make_checkpoint("time")


@pytest.fixture
def class_ckpt(make_checkpoint):
    return make_checkpoint("class")


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "CLASS", "--per-digit", "1000000"],
        ["sample", "TIME", "--n", "1000000"],
        ["eval", "TIME", "--n", "1000000"],
        ["eval", "TIME", "--n", "20000", "--batch-size", "20000"],
        ["train", "class", "--hidden-dim", "1000000"],
        ["train", "class", "--num-timesteps", "1000000000000"],
        ["sample", "CLASS", "--seed", str(10**30)],
    ],
)
def test_oversized_cli_requests_are_refused_at_once(argv, class_ckpt, time_ckpt, tmp_path, capsys):
    paths = {"CLASS": str(class_ckpt), "TIME": str(time_ckpt)}
    argv = [paths.get(arg, arg) for arg in argv]
    out = ["--out", str(tmp_path / ("run" if argv[0] == "train" else "g.png"))]
    assert cli.main([*argv, *out] if argv[0] != "eval" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffumnist: error:"), err


def test_guidance_that_overflows_is_an_error_not_nan_digits(tiny_class_model):
    with pytest.raises(ConfigError, match="diverged to non-finite values"):
        tiny_class_model.sample([1, 2], guidance_scale=1e308)
    assert tiny_class_model.sample([1, 2], guidance_scale=1e6)[0].isfinite().all()


def test_oversized_api_requests_are_refused(tiny_class_model, time_ckpt):
    time_model = load(time_ckpt)
    too_many = MAX_SAMPLES_PER_CALL + 1
    with pytest.raises(ConfigError, match="at most"):
        time_model.sample(n=1_000_000)
    with pytest.raises(ConfigError, match="at most"):
        tiny_class_model.sample(torch.zeros(too_many, dtype=torch.long))
    with pytest.raises(ConfigError, match="at most"):  # few samples, each enormous
        tiny_class_model.sample([1], img_wh=(28 * 1000, 28 * 1000))
    recipe_t = DiffusionModel(ModelConfig(kind="class", hidden_dim=4, num_timesteps=300))
    digits = torch.zeros(MAX_SAMPLES_PER_CALL, dtype=torch.long)
    with pytest.raises(ConfigError, match="GiB"):  # within the cap, but 301 frames of each
        recipe_t.sample(digits)
    with pytest.raises(ConfigError, match="n must lie"):
        evaluate.generate(time_model, 1_000_000)


# Values that reach past every bound: extremes, non-numbers, empties, huge and negative.
EXTREMES = ["nan", "inf", "-inf", "1e308", "1e-320", "", " ", "0x10", "1_000", str(2**63),
            str(2**64), str(-(2**63) - 1), str(10**30), "-0", "3.5", "ddim", "dpmpp", "ddpm",
            "0-9", "9-0", "1,,3", "١", "²", "\x00", "--out", "-"]  # fmt: skip
HOSTILE_TEXT = st.one_of(
    st.integers(-3, 3).map(str), st.sampled_from(EXTREMES), st.text(max_size=8)
)
SAMPLE_FLAGS = ["--digits", "--per-digit", "--n", "--guidance-scale", "--seed", "--sampler",
                "--steps", "--eta", "--spacing", "--device", "--precision", "--bogus",
                "--out"]  # fmt: skip
TRAIN_FLAGS = ["--hidden-dim", "--epochs", "--batch-size", "--lr", "--lr-gamma", "--sigma",
               "--p-uncond", "--num-timesteps", "--beta-start", "--beta-end", "--ema-decay",
               "--seed", "--subset", "--max-steps", "--precision", "--device",
               "--preview-every", "--eval-every", "--eval-n", "--resume", "--nproc",
               "--batchnorm"]  # fmt: skip


def _argv(flags: list[str]) -> st.SearchStrategy[list[str]]:
    pairs = st.lists(st.tuples(st.sampled_from(flags), HOSTILE_TEXT), max_size=4)
    return pairs.map(lambda items: [token for pair in items for token in pair])


def _assert_clean(code: int, err: str) -> None:
    event(f"exit {code}")
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("diffumnist: error:"), err


@FUZZ
@given(argv=_argv(SAMPLE_FLAGS))
def test_fuzzed_sample_flags_fail_cleanly(argv, class_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fuzzed --out can only land here
    cheap = ["--device", "cpu", "--digits", "1", "--per-digit", "1"]  # fuzzed flags override
    code = cli.main(["sample", str(class_ckpt), *cheap, *argv])
    _assert_clean(code, capsys.readouterr().err)


@FUZZ
@given(kind=st.sampled_from(["class", "time", "denoiser", "gan", ""]), argv=_argv(TRAIN_FLAGS))
def test_fuzzed_train_flags_fail_cleanly(kind, argv, tmp_path, monkeypatch, capsys):
    """Parsing and validation for real (the --nproc checks too); the training loop and the
    launch of ranks are stubbed out."""
    monkeypatch.setattr(commands.Trainer, "run", lambda trainer: trainer.folder.path / "stub")
    monkeypatch.setattr(commands, "launch", lambda nproc, argv: None)
    code = cli.main(["train", kind, "--out", str(tmp_path / "run"), *argv])
    _assert_clean(code, capsys.readouterr().err)


HUGE_INTS = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30])  # past int64 and uint64
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 5, -1, 28, 56, 1e-9]),
)
# Each case is a valid request with up to two arguments replaced by hostile values, so the
# fuzzer reaches the sampling loops as well as the checks at the door.
HOSTILE_SAMPLE_ARGS = {
    "c": st.one_of(st.none(), st.lists(NUMBERS, max_size=5), NUMBERS),
    "img_wh": st.one_of(
        st.tuples(st.sampled_from([0, -28, 27, 28.5, 28.0, "28", 28 * 10**5]), st.just(28)),
        st.sampled_from([None, 28, "28x28", (28,), (28, 28, 28), (True, 28)]),
    ),
    "precision": st.one_of(st.sampled_from(["fp8", "FP32", "", None, 16]), st.text(max_size=5)),
    "guidance_scale": NUMBERS,
    "seed": st.one_of(st.integers(-(2**70), 2**70), HUGE_INTS, st.floats()),
    "n": NUMBERS,
    "frame_every": st.one_of(st.integers(-2, 10), st.integers(10**9, 2**70), st.floats()),
    "sampler": st.text(max_size=6),
    "steps": st.one_of(st.integers(-(2**70), 2**70), st.floats()),
    "eta": NUMBERS,
    "spacing": st.one_of(st.sampled_from(["logsnr", "trailing", "", None]), st.text(max_size=6)),
}


@FUZZ
@given(data=st.data())
def test_fuzzed_sample_api_fails_cleanly(tiny_class_model, data):
    kwargs = {
        "c": data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)),
        "seed": data.draw(st.integers(0, 2**32)),
        "sampler": data.draw(st.sampled_from(["ddpm", "ddim", "dpmpp"])),
    }
    if kwargs["sampler"] != "ddpm":
        kwargs["steps"] = data.draw(st.integers(1, 20))
    for name in data.draw(st.sets(st.sampled_from(sorted(HOSTILE_SAMPLE_ARGS)), max_size=2)):
        kwargs[name] = data.draw(HOSTILE_SAMPLE_ARGS[name], label=name)
    try:
        samples, frames = tiny_class_model.sample(**kwargs)
    except ConfigError:
        event("refused")
        return
    event("sampled")
    width, height = kwargs.get("img_wh", (28, 28))
    assert samples.shape[1:] == (1, height, width) and frames.dtype == torch.uint8
    assert bool(torch.isfinite(samples).all())  # e.g. guidance 1e308 is refused, not NaN
