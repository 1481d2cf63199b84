"""The time-to-quality benchmark's kept run folder (`run --run-dir`): a 98-minute run that is
interrupted must not start over, and must end with the copies an uninterrupted run takes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from test_train import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import time_to_quality as ttq

from diffumnist.sampling.pipeline import load_guide

# 64 images per step at 64/60 images/s: one minute per step, so marks are steps.
MARKS = [2.0, 5.0, 100.0]  # copies at steps 2 and 5; the 9-step run ends before 100


def run(config, data_dir, run_dir: Path | None) -> tuple[ttq.Recorder, float]:
    args = argparse.Namespace(rate=64 / 60, keep=None, run_dir=run_dir and str(run_dir),
                              other_ema=[], power_ema=[], compare_ema=False)  # fmt: skip
    _, recorder, seconds = ttq.train(config, MARKS, data_dir, args)
    return recorder, seconds


def assert_same_copies(expected: list[ttq.Snapshot], actual: list[ttq.Snapshot]) -> None:
    assert [s.step for s in actual] == [s.step for s in expected]
    for want, got in zip(expected, actual, strict=True):
        assert got.weights.keys() == want.weights.keys() == {"raw", "ema"}
        for which, state in want.weights.items():
            for name, value in state.items():
                assert torch.equal(value, got.weights[which][name]), (want.step, which, name)


def test_an_interrupted_run_resumes_to_the_copies_of_an_uninterrupted_one(
    tmp_path, data_dir, monkeypatch
):
    config = tiny_config(ema_decay=0.9)  # 3 epochs of 3 steps
    straight, _ = run(config, data_dir, None)
    assert [s.step for s in straight.snapshots] == [2, 5, 9]
    assert [s.final for s in straight.snapshots] == [False, False, True]

    class CrashInEpochThree(ttq.Trainer):
        def step(self, state, *rest):
            if state.step == 7:  # epochs 1 and 2 are checkpointed, both marks copied
                raise KeyboardInterrupt
            return super().step(state, *rest)

    monkeypatch.setattr(ttq, "Trainer", CrashInEpochThree)
    with pytest.raises(KeyboardInterrupt):
        run(config, data_dir, tmp_path / "kept")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "kept").glob("mark_*")) == [
        "mark_0000002.safetensors",
        "mark_0000005.safetensors",
    ]

    resumed, _ = run(config, data_dir, tmp_path / "kept")
    assert resumed.first_step == 6  # from the end of epoch 2, not from 0
    assert_same_copies(straight.snapshots, resumed.snapshots)

    again, seconds = run(config, data_dir, tmp_path / "kept")  # every copy is on disk
    assert seconds == 0.0 and again.first_step is None
    assert_same_copies(straight.snapshots, again.snapshots)


def test_a_run_that_keeps_a_twin_is_scored_at_its_end_guided_by_it(tmp_path, data_dir, monkeypatch):
    config = tiny_config(kind="time", ema_decay=0.9, twin_epoch=1)
    recorder, _ = run(config, data_dir, tmp_path / "kept")
    twin = ttq.load_checkpoint(tmp_path / "kept" / "run" / "twin.safetensors").weights
    assert recorder.twin is not None and recorder.twin.keys() == twin.keys()
    calls = []

    def fake_score(config, weights, n, seed, data_dir, twin=None):
        calls.append((weights, twin))
        return {"mnist_fid": 1.0, "precision": 1.0, "recall": 1.0}

    monkeypatch.setattr(ttq, "score", fake_score)
    args = argparse.Namespace(n=10, final_n=20, eval_seed=0)
    rows = list(ttq.score_snapshots(config, recorder.snapshots, args, data_dir, recorder.twin))
    assert [row["weights"] for row in rows] == ["ema", "ema", "raw", "ema", "ema+twin"]
    last = recorder.snapshots[-1].weights["ema"]
    assert calls[-1][0] is last and calls[-2][0] is last and calls[-2][1] is None
    assert all(torch.equal(value, calls[-1][1][name]) for name, value in twin.items())


def test_a_kept_copy_becomes_a_checkpoint_that_guides(tmp_path, data_dir):
    config = tiny_config(kind="time", ema_decay=0.9)
    recorder, _ = run(config, data_dir, tmp_path / "kept")
    out = tmp_path / "guide.safetensors"
    ttq.cmd_guide(argparse.Namespace(copy=str(tmp_path / "kept" / "mark_0000005.safetensors"),
                                     out=str(out)))  # fmt: skip
    guide = ttq.load_checkpoint(out)
    copy = recorder.snapshots[1]
    assert copy.step == 5 and guide.meta["step"] == 5
    assert guide.model_config == ttq.read_run_config(tmp_path / "kept" / "run").model_config()
    assert guide.weights.keys() == copy.weights["ema"].keys()
    assert all(
        torch.equal(value, guide.weights[name]) for name, value in copy.weights["ema"].items()
    )
    assert not torch.equal(
        copy.weights["ema"]["out_conv.weight"], copy.weights["raw"]["out_conv.weight"]
    )
    load_guide(str(out), guide.model_config)  # what `--guide FILE` does with it
