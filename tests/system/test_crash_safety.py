"""Crash safety: SIGKILL at any moment, even mid-checkpoint, never costs more than an epoch.

The claims of train.py's docstring, tested on real processes: a checkpoint on disk is always
complete (written to a temp file, fsynced, renamed), `--resume` continues from it, and the
resumed run ends with exactly the weights and loss log of a run that never stopped. A full
disk during a checkpoint write stops training with one line and leaves the old file intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import LONG_TESTS

from diffumnist.checkpoint import load_checkpoint
from diffumnist.cli import main
from diffumnist.config import TrainConfig
from diffumnist.train import CHECKPOINT_NAME, Trainer

TINY = ["--hidden-dim", "4", "--num-timesteps", "5", "--subset", "256", "--batch-size", "64",
        "--preview-every", "0", "--precision", "fp32", "--device", "cpu"]  # fmt: skip
# SIGKILLs that must land (a third of them mid-write), and epochs enough to land them in
KILLS, EPOCHS = (20, 48) if LONG_TESTS else (6, 16)
STEPS = EPOCHS * 256 // 64
# Runs `python -m diffumnist ...` with every fsync slowed by 50 ms: the window in which a
# checkpoint exists only as a temp file widens from microseconds to something a poll of the
# folder can hit, so the test really kills processes mid-write (the orphan temp file proves it).
LAUNCHER = """
import os, runpy, sys, time
real_fsync = os.fsync
os.fsync = lambda fd: (time.sleep(0.05), real_fsync(fd))[1]
sys.argv = ["diffumnist", *sys.argv[1:]]
runpy.run_module("diffumnist", run_name="__main__", alter_sys=True)
"""


def _start(run_dir: Path) -> subprocess.Popen:
    """Start training into run_dir: `--resume` once a config.json exists, as a user would."""
    if (run_dir / "config.json").exists():
        argv = ["train", "class", "--out", str(run_dir), "--resume"]
    else:
        argv = ["train", "class", "--out", str(run_dir), "--epochs", str(EPOCHS), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temp_files(run_dir: Path) -> list[Path]:
    return list(run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"))


def _kill_mid_write(proc: subprocess.Popen, run_dir: Path, skip: int) -> None:
    """Let `skip` checkpoint writes complete, SIGKILL during the next one."""
    orphans = set(_temp_files(run_dir))  # of earlier kills; the resumed run deletes them
    writes_seen: set[Path] = set()
    while proc.poll() is None:
        writes_seen.update(set(_temp_files(run_dir)) - orphans)
        if len(writes_seen) > skip:
            proc.kill()
            break
        time.sleep(0.002)


def _kill_after(proc: subprocess.Popen, delay: float, run_dir: Path, most_writes: int = 3) -> None:
    """SIGKILL after `delay` seconds, or sooner once the run has written `most_writes` more
    checkpoints: however the machine's speed drifts from the reference run's, every kill
    then lands before the resumed run can finish."""
    checkpoint = run_dir / CHECKPOINT_NAME
    deadline = time.monotonic() + delay
    writes: set[int] = set()  # modification times of the checkpoints seen
    while proc.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            writes.add(checkpoint.stat().st_mtime_ns)
        if time.monotonic() >= deadline or len(writes) > most_writes:
            proc.kill()
            break
        time.sleep(0.002)


def _finish(run_dir: Path) -> float:
    """Run to the end without interruption; returns the seconds it took."""
    started = time.monotonic()
    proc = _start(run_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.monotonic() - started


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_and_resume_matches(tmp_path):
    reference = tmp_path / "reference"
    seconds = _finish(reference)  # random delays scale with it, so they fit any machine

    run_dir = tmp_path / "killed"
    rng = random.Random(7)
    steps_seen: list[int] = []
    mid_write_kills = kills = 0
    for attempt in range(2 * KILLS):
        if kills == KILLS:
            break
        orphans = set(_temp_files(run_dir))
        proc = _start(run_dir)
        if attempt % 2 == 0:
            _kill_mid_write(proc, run_dir, skip=rng.randint(0, 1))
        else:
            # within the first 10-60 % of a run for 6 kills; more kills, earlier, so that
            # they all land before the resumed run has finished
            _kill_after(proc, rng.uniform(0.1, 0.6) * seconds * 6 / KILLS, run_dir)
        proc.wait()
        proc.stderr.close()
        kills += proc.returncode == -signal.SIGKILL
        mid_write_kills += bool(set(_temp_files(run_dir)) - orphans)
        if (run_dir / CHECKPOINT_NAME).exists():
            steps_seen.append(load_checkpoint(run_dir / CHECKPOINT_NAME).meta["step"])
    _finish(run_dir)

    assert kills == KILLS and mid_write_kills >= KILLS // 3, (kills, mid_write_kills)
    assert steps_seen == sorted(steps_seen) and steps_seen, steps_seen
    assert not _temp_files(run_dir), "resume should clear temp files of killed writes"
    expected = load_checkpoint(reference / CHECKPOINT_NAME)
    resumed = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert resumed.meta["step"] == expected.meta["step"] == STEPS and resumed.meta["done"]
    for name, value in expected.weights.items():
        assert torch.equal(value, resumed.weights[name]), name
    assert (run_dir / "loss.jsonl").read_text() == (reference / "loss.jsonl").read_text()


def _fail_second_checkpoint_fsync(monkeypatch) -> None:
    """Make the second checkpoint's fsync fail as a full disk does (config.json is tiny)."""
    real_fsync = os.fsync
    checkpoints = {"n": 0}

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size > 10_000:
            checkpoints["n"] += 1
            if checkpoints["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_during_checkpoint_keeps_previous_and_says_so(
    tmp_path, data_dir, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    argv = ["train", "class", "--out", str(run_dir), "--epochs", "2", *TINY]
    _fail_second_checkpoint_fsync(monkeypatch)
    assert main([*argv, "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err  # tqdm's bar, then our message
    message = err.splitlines()[-1]
    assert (
        message.startswith("diffumnist: training failed: cannot write") and "Traceback" not in err
    )
    assert "No space left on device" in message and "previous checkpoint" in message, message
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert (ckpt.meta["epoch"], ckpt.meta["step"]) == (1, 4)
    assert not list(run_dir.glob(".*.tmp"))

    monkeypatch.undo()
    assert main(["train", "class", "--out", str(run_dir), "--resume"]) == 0
    assert load_checkpoint(run_dir / CHECKPOINT_NAME).meta["step"] == 8


def test_disk_full_while_writing_a_preview_stops_cleanly_and_resumes(
    tmp_path, data_dir, monkeypatch, capsys
):
    """Previews are written atomically too: the failed one leaves no partial file."""
    run_dir = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if "epoch_002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    argv = ["train", "class", "--out", str(run_dir), "--epochs", "2", *TINY, "--preview-every", "1"]
    assert main([*argv, "--data-dir", str(data_dir)]) == 1
    message = capsys.readouterr().err.splitlines()[-1]
    assert "No space left on device" in message and "previous checkpoint" in message, message
    assert load_checkpoint(run_dir / CHECKPOINT_NAME).meta["epoch"] == 1
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["epoch_001.npz"]

    monkeypatch.undo()
    assert main(["train", "class", "--out", str(run_dir), "--resume"]) == 0
    assert (run_dir / "previews" / "epoch_002.npz").exists()


def test_resume_drops_a_half_written_log_line_and_orphan_temp_files(tmp_path, data_dir):
    """What a kill mid-append and a kill mid-checkpoint leave behind, made by hand."""
    config = TrainConfig(kind="class", hidden_dim=4, num_timesteps=5, subset=128, batch_size=64,
                         epochs=2, preview_every=0, precision="fp32", device="cpu")  # fmt: skip
    Trainer(config, tmp_path / "straight", data_dir).run()

    def crash_in_epoch_two(state):
        if state.step == 3:  # the fourth step, the second of epoch two
            raise KeyboardInterrupt

    crashing = Trainer(config, tmp_path / "run", data_dir, before_step=crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    run = tmp_path / "run"
    with (run / "loss.jsonl").open("a") as log:
        log.write('{"step": 3, "epo')
    (run / f".{CHECKPOINT_NAME}.x1y2z3.tmp").write_bytes(b"\x00" * 100)
    Trainer.resume(run, data_dir).run()
    assert (run / "loss.jsonl").read_text() == (tmp_path / "straight" / "loss.jsonl").read_text()
    assert not _temp_files(run)
