"""Training: artefacts of a run, exact resume after a crash, and a clean stop on NaN."""

from __future__ import annotations

import json

import pytest
import torch

from diffumnist.checkpoint import load_checkpoint
from diffumnist.cli import main
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.kinds.class_conditioned import ClassConditioned
from diffumnist.train import CHECKPOINT_NAME, Trainer, TrainingError


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(
        kind="class",
        hidden_dim=8,
        epochs=3,
        batch_size=64,
        subset=192,
        num_timesteps=20,
        preview_every=0,
        precision="fp32",
        device="cpu",
        seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_run_folder_holds_config_log_and_checkpoint(tmp_path, data_dir):
    Trainer(tiny_config(preview_every=3), tmp_path / "run", data_dir).run()
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["hidden_dim"] == 8
    lines = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in lines] == list(range(1, 10))  # 3 epochs x 3 batches
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["step"] == 9 and ckpt.meta["done"]
    assert ckpt.optimizer is not None and ckpt.rng_state is not None
    assert (run / "previews" / "epoch_003.npz").exists()


def test_lr_decays_by_recipe_gamma_per_epoch():
    config = TrainConfig(kind="class").resolved()
    assert config.lr == 1e-3 and config.epochs == 20
    assert config.lr * config.lr_gamma**20 == pytest.approx(1e-4)
    denoiser = TrainConfig(kind="denoiser").resolved()
    assert (denoiser.hidden_dim, denoiser.batch_size, denoiser.lr_gamma) == (128, 256, 1.0)


@pytest.mark.parametrize("kind", ["class", "denoiser"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, data_dir, kind):
    config = tiny_config(kind=kind, ema_decay=0.9)
    Trainer(config, tmp_path / "straight", data_dir).run()

    def crash_mid_epoch_two(state):
        if state.step == 4:  # epoch 1 (3 steps) is checkpointed, epoch 2 is half done
            raise KeyboardInterrupt

    crashing = Trainer(config, tmp_path / "crashed", data_dir, before_step=crash_mid_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    assert load_checkpoint(tmp_path / "crashed" / CHECKPOINT_NAME).meta["epoch"] == 1
    Trainer.resume(tmp_path / "crashed", data_dir).run()

    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    resumed = load_checkpoint(tmp_path / "crashed" / CHECKPOINT_NAME)
    assert resumed.meta["step"] == straight.meta["step"] == 9
    for name, value in straight.weights.items():
        assert torch.equal(value, resumed.weights[name]), name
    for name, value in straight.ema_weights.items():
        assert torch.equal(value, resumed.ema_weights[name]), name
    straight_log = (tmp_path / "straight" / "loss.jsonl").read_text()
    assert (tmp_path / "crashed" / "loss.jsonl").read_text() == straight_log


def test_a_finished_run_extended_with_more_epochs_ends_like_a_longer_run(tmp_path, data_dir):
    """`train --resume --epochs 3` trains a finished 2-epoch run on: its weights, EMA and log
    equal those of a run started with 3 epochs and the 2-epoch run's decay per epoch."""
    short = tiny_config(epochs=2, ema_decay=0.9)
    Trainer(short, tmp_path / "extended", data_dir).run()
    argv = ["train", "class", "--out", str(tmp_path / "extended"), "--resume", "--epochs", "3"]
    assert main([*argv, "--data-dir", str(data_dir)]) == 0
    longer = tiny_config(epochs=3, ema_decay=0.9, lr_gamma=short.resolved().lr_gamma)
    Trainer(longer, tmp_path / "longer", data_dir).run()

    extended, straight = (
        load_checkpoint(tmp_path / d / CHECKPOINT_NAME) for d in ("extended", "longer")
    )
    assert extended.meta["epoch"] == straight.meta["epoch"] == 3 and extended.meta["done"]
    assert json.loads((tmp_path / "extended" / "config.json").read_text())["epochs"] == 3
    for name, value in straight.weights.items():
        assert torch.equal(value, extended.weights[name]), name
    for name, value in straight.ema_weights.items():
        assert torch.equal(value, extended.ema_weights[name]), name
    logs = [(tmp_path / d / "loss.jsonl").read_text() for d in ("extended", "longer")]
    assert logs[0] == logs[1]
    with pytest.raises(ConfigError, match="trained 3 epochs; it can only extend"):
        Trainer(tiny_config(epochs=2, ema_decay=0.9), tmp_path / "longer", data_dir).run()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    class Diverging(ClassConditioned):
        """The class model's objective, turning NaN from the fifth step on."""

        calls = 0

        def loss(self, *args):
            Diverging.calls += 1
            loss = super().loss(*args)
            return loss * float("nan") if Diverging.calls > 4 else loss

    trainer = Trainer(tiny_config(), tmp_path / "run", data_dir, kind=Diverging())
    with pytest.raises(TrainingError, match="nan"):
        trainer.run()
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert ckpt.meta["epoch"] == 1 and ckpt.meta["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt.weights.values() if v.is_floating_point())


def test_max_steps_stops_early(tmp_path, data_dir):
    Trainer(tiny_config(max_steps=4), tmp_path / "run", data_dir).run()
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert ckpt.meta["step"] == 4 and ckpt.meta["done"]


def test_losses_are_read_back_in_batches_with_the_batch_means(tmp_path):
    """The log holds each global batch's mean loss, read from the device every `every` steps."""
    from diffumnist.distributed import World
    from diffumnist.train import LossLog

    log = LossLog(World(), tmp_path / CHECKPOINT_NAME, every=4)
    means = [0.5, 0.25, 0.125, 1 / 3, 0.1, 0.2]
    flushed = [log.add(i + 1, 1, torch.tensor(m * 64, dtype=torch.float64), 64)
               for i, m in enumerate(means)]  # fmt: skip
    assert flushed == [False, False, False, True, False, False] and len(log.entries) == 4
    assert log.take() == [{"step": i + 1, "epoch": 1, "loss": m} for i, m in enumerate(means)]
    assert log.take() == []
    log.add(7, 2, torch.tensor(float("nan"), dtype=torch.float64), 64)
    with pytest.raises(TrainingError, match="loss became nan at step 7"):
        log.take()
