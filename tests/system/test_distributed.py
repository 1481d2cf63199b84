"""Data-parallel training and evaluation on real processes (gloo, 2 CPU ranks).

The claim of distributed.py is that N ranks compute the run one process computes with the
same global batch. Float sums over a batch split in two are added in another order, so
"the same" means: the per-step losses agree to 1e-6 and the weights to 1e-4 after a dozen
Adam steps, except for one documented group. The bias of a convolution that feeds a
BatchNorm has a true gradient of exactly zero (BatchNorm subtracts the batch mean, bias
included); its computed gradient is rounding noise (~1e-10) that Adam normalises into
steps of ±lr, so those biases (and the running means that track them) wander differently
in any two runs that add in different orders. They do not change the training output,
which is compared instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffumnist.checkpoint import load_checkpoint
from diffumnist.cli import main
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.distributed import World, check_gpus_for
from diffumnist.kinds import build_net
from diffumnist.train import CHECKPOINT_NAME, Trainer

# 200 images in batches of 63: 63, 63, 63, 11, so the ranks' shares are uneven (32/31, 6/5)
CONFIG = TrainConfig(
    kind="class", hidden_dim=8, epochs=3, batch_size=63, subset=200, num_timesteps=20,
    ema_decay=0.9, preview_every=0, precision="fp32", device="cpu", seed=3,
)  # fmt: skip
STEPS = 3 * 4


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def _absorbed_by_batchnorm(weights: dict[str, torch.Tensor]) -> set[str]:
    """Conv biases that feed a BatchNorm (Sequential(conv, BN, GELU)) and its running means."""
    names = set()
    for name in weights:
        prefix, _, leaf = name.rpartition(".0.")
        if leaf == "bias" and f"{prefix}.1.running_mean" in weights:
            names |= {name, f"{prefix}.1.running_mean"}
    return names


def _assert_same_run(expected: dict, actual: dict, atol: float = 1e-4) -> None:
    absorbed = _absorbed_by_batchnorm(expected)
    assert len(absorbed) == 34  # 17 conv+BN blocks in the recipe's class UNet
    for name, value in expected.items():
        if name not in absorbed:
            torch.testing.assert_close(actual[name], value, rtol=0, atol=atol, msg=name)
    # what the absorbed biases would change, the training-mode output, agrees
    nets = []
    for weights in (expected, actual):
        net = build_net(CONFIG.model_config())
        net.load_state_dict(weights)
        nets.append(net.train())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=generator)
    t = torch.rand(32, generator=generator)
    c = torch.nn.functional.one_hot(torch.arange(32) % 10, 10).float()
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x, t, c), nets[0](x, t, c), rtol=0, atol=1e-3)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    Trainer(CONFIG, run_dir).run()
    return run_dir


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "loss.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("n", "size"), [(200, 2), (11, 2), (7, 3), (5, 5), (128, 8)])
def test_shards_cover_every_item_once_and_differ_by_at_most_one(n, size):
    shards = [World(rank, size).shard(n) for rank in range(size)]
    assert [i for s in shards for i in range(n)[s]] == list(range(n))
    lengths = [len(range(n)[s]) for s in shards]
    assert max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("batchnorm", ["global", "local"])
def test_two_ranks_hold_identical_weights(tmp_path, single_process_run, batchnorm):
    """torchrun, 2 gloo ranks: the ranks agree bit for bit (weights, EMA, BatchNorm
    statistics); with global BatchNorm they also agree with the single process."""
    config_json = json.dumps(dataclasses.asdict(dataclasses.replace(CONFIG, batchnorm=batchnorm)))
    worker = Path(__file__).with_name("ddp_rank.py")
    result = _run([
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(worker), str(tmp_path / "run"), str(tmp_path), config_json,
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
    distributed_log, single_log = _log(tmp_path / "run"), _log(single_process_run)
    if batchnorm == "local":  # each half-batch normalised by its own statistics: another run
        assert abs(distributed_log[0]["loss"] - single_log[0]["loss"]) > 1e-4
        return

    single = load_checkpoint(single_process_run / CHECKPOINT_NAME)
    _assert_same_run(single.weights, {k[4:]: v for k, v in rank0.items() if k[:4] == "net."})
    _assert_same_run(single.ema_weights, {k[4:]: v for k, v in rank0.items() if k[:4] == "ema."})
    # only rank 0 writes: one log line per step, equal to the single process's losses
    assert [e["step"] for e in distributed_log] == list(range(1, STEPS + 1))
    for mine, theirs in zip(distributed_log, single_log, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-6, abs=0)
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert torch.equal(saved.rng_state, single.rng_state)  # the generator advanced alike
    for name, value in saved.weights.items():
        assert torch.equal(value, rank0[f"net.{name}"]), name


def test_nproc_resumes_a_single_process_run_and_finishes_it_alike(
    tmp_path, data_dir, single_process_run
):
    """A run interrupted mid-epoch on one process is resumed with `--nproc 2`: the ranks
    restore the checkpoint, rank 0 drops the log lines past it, and the run ends as the
    uninterrupted one did (the generator state does not depend on the number of ranks)."""
    run_dir = tmp_path / "run"

    def crash_in_epoch_two(state):
        if state.step == 6:
            raise KeyboardInterrupt

    crashing = Trainer(CONFIG, run_dir, data_dir, before_step=crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    assert load_checkpoint(run_dir / CHECKPOINT_NAME).meta["step"] == 4
    with (run_dir / "loss.jsonl").open("a") as log:  # as a kill mid-append would leave it
        log.write('{"step": 5, "epoch": 2, "loss": 9.0}\n{"step": 6, "ep')

    result = _run(["-m", "diffumnist", "train", "class", "--out", str(run_dir), "--resume",
                   "--nproc", "2"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("checkpoint:") == 1  # printed by rank 0 only
    resumed, single = (load_checkpoint(d / CHECKPOINT_NAME) for d in (run_dir, single_process_run))
    assert resumed.meta["step"] == STEPS and resumed.meta["done"]
    _assert_same_run(single.weights, resumed.weights)
    assert [e["step"] for e in _log(run_dir)] == list(range(1, STEPS + 1))


def test_nproc_eval_gathers_the_single_process_sample_set(tmp_path, make_checkpoint):
    """Batches keep their seeds on whichever rank draws them: the images are bit-identical.

    The scores agree to float rounding only: the judge's features depend on the number of
    threads a process scores with (one per rank here, all cores for the single process).
    """
    checkpoint = make_checkpoint("class", hidden_dim=8, num_timesteps=20)
    outputs = {}
    for nproc in ("1", "2"):
        npz, report = tmp_path / f"{nproc}.npz", tmp_path / f"{nproc}.json"
        result = _run([
            "-m", "diffumnist", "eval", str(checkpoint), "--n", "23", "--batch-size", "4",
            "--sampler", "dpmpp", "--steps", "4", "--precision", "fp32", "--device", "cpu",
            "--npz", str(npz), "--json", str(report), "--nproc", nproc,
        ])  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("MNIST-FID") == 1
        outputs[nproc] = np.load(npz), json.loads(report.read_text())
    (one, one_scores), (two, two_scores) = outputs["1"], outputs["2"]
    assert np.array_equal(one["images"], two["images"])
    assert np.array_equal(one["labels"], two["labels"])
    assert two_scores["mnist_fid"] == pytest.approx(one_scores["mnist_fid"], rel=1e-6)
    assert two_scores["guided_accuracy"] == one_scores["guided_accuracy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "class", "--nproc", "2", "--subset", "65", "--batch-size", "64"],
         "a batch of 1 images cannot be shared by 2 processes"),
        (["train", "classifier", "--nproc", "2"], "train classifier takes only"),
        (["eval", "--samples", "x.npz", "--nproc", "2"], "scoring --samples needs one"),
        (["eval", "denoiser", "--nproc", "2"], "runs on one process; drop --nproc"),
        (["train", "class", "--batchnorm", "sync"], "invalid choice: 'sync'"),
    ],
)  # fmt: skip
def test_distributed_mistakes_are_one_line_before_any_process_starts(
    tmp_path, capsys, argv, message
):
    os.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_each_rank_on_a_gpu_needs_its_own(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_gpus_for(1)
    with pytest.raises(ConfigError, match="2 processes on cuda need 2 GPUs; this machine has 1"):
        check_gpus_for(2)


def test_nproc_must_agree_with_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["eval", "class", "--nproc", "3"]) == 2
    assert "rank 1: error: --nproc 3 disagrees with torchrun's 2 ranks" in capsys.readouterr().err


def test_a_killed_rank_stops_the_run_with_one_line_and_leaves_no_orphans(tmp_path):
    """SIGKILL one rank mid-training: torchrun stops the other, the launcher names the rank
    that died (not the ones it stopped), exits 1, and every rank process is gone."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "diffumnist", "train", "class", "--out", str(run_dir),
         "--hidden-dim", "8", "--preview-every", "0", "--nproc", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "loss.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # rank 0 has prepared the run folder: both ranks are training
        ranks = subprocess.run(
            ["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(ranks) == 2, ranks
        rank1 = next(
            p for p in ranks if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{p}/environ").read_bytes()
        )
        time.sleep(1)
        os.kill(int(rank1), signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 1
    assert err.strip().splitlines()[-1] == "diffumnist: rank 1 was killed by signal 9"
    for pid in ranks:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_the_launcher_was_checked_against_this_torch():
    """launch() drives torchrun's internals; they must still exist and be re-read on upgrade."""
    import inspect

    from torch.distributed.elastic.multiprocessing.api import SignalException  # noqa: F401
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from diffumnist.launcher import CHECKED_WITH_TORCH

    assert ".".join(torch.__version__.split(".")[:2]) == CHECKED_WITH_TORCH
    assert "failures" in inspect.signature(ChildFailedError).parameters
    args = parse_args(["--standalone", "--nproc_per_node=2", "-m", "diffumnist"])
    assert args.nproc_per_node == "2" and args.module and callable(run)
