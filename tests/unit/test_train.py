"""Training: artefacts of a run, exact resume after a crash, and a clean stop on NaN."""

from __future__ import annotations

import itertools
import json
import math

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


def test_ema_warms_up_from_a_copy_to_its_decay():
    from diffumnist.train import ema_decay_at

    assert ema_decay_at(0.999, 0) == 0.0  # the first update copies the weights
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 100_000) == 0.999


def test_a_50_step_ema_is_not_dominated_by_the_initialisation(tmp_path, data_dir):
    """Without a warm-up, 50 steps at β = 0.999 leave 0.999**50 = 95 % of the random
    initialisation in the EMA; with it, the EMA sits close to the trained weights."""
    initial = {}

    def keep_initial(state):
        if state.step == 0:
            initial.update({k: v.clone() for k, v in state.net.state_dict().items()})

    config = tiny_config(epochs=5, batch_size=64, subset=640, ema_decay=0.999)  # 50 steps
    Trainer(config, tmp_path / "run", data_dir, before_step=keep_initial).run()
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert ckpt.meta["step"] == 50

    def distance(weights):
        return sum((weights[k].float() - raw).square().sum() for k, raw in trained.items()).sqrt()

    trained = {k: v.float() for k, v in ckpt.weights.items() if v.is_floating_point()}
    assert distance(ckpt.ema_weights) < 0.2 * distance(initial)


def test_the_recipe_has_no_fast_settings_and_the_fast_preset_fills_them():
    for kind in ("denoiser", "time", "class"):
        config = TrainConfig(kind=kind).resolved()
        assert (config.preset, config.warmup_steps, config.lr_final) == ("recipe", 0, None)
        assert config.min_snr_gamma == 0.0 and config.ema_decay == 0.0
    fast = TrainConfig(kind="class", preset="fast", lr=5e-4).resolved()
    assert fast.lr == 5e-4  # a field given wins over the preset
    assert fast.warmup_steps > 0 and fast.lr_final is not None and fast.ema_decay > 0
    with pytest.raises(ConfigError, match="no fast training preset"):
        TrainConfig(kind="denoiser", preset="fast").resolved()
    with pytest.raises(ConfigError, match="preset must be one of recipe, fast"):
        TrainConfig(kind="class", preset="quick").resolved()


def test_lr_warms_up_linearly_then_follows_the_cosine_to_lr_final():
    from diffumnist.train import lr_factor

    config = tiny_config(warmup_steps=4, lr_final=0.1, lr_gamma=1.0).resolved()
    factors = [lr_factor(config, 10, 100, step) for step in range(101)]
    assert factors[:3] == pytest.approx([0.25 * f for f in (1, 2, 3)], rel=1e-3)
    assert factors[50] == pytest.approx(0.1 + 0.9 * 0.5)
    assert factors[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    stepped = tiny_config(warmup_steps=2, lr_gamma=0.5).resolved()  # no cosine: per epoch
    assert [lr_factor(stepped, 10, 100, s) for s in (0, 1, 9, 10, 25)] == [0.5, 1, 1, 0.5, 0.25]

    def cosine(progress: float) -> float:
        return 0.1 + 0.9 * (1 + math.cos(math.pi * progress)) / 2

    # A warm-up longer than a fifth of the run is cut to that fifth (20 of 100 steps).
    short = tiny_config(warmup_steps=200, lr_final=0.1, lr_gamma=1.0).resolved()
    assert lr_factor(short, 10, 100, 9) == pytest.approx(0.5 * cosine(0.09))
    assert lr_factor(short, 10, 100, 19) == pytest.approx(cosine(0.19))


def test_a_fast_preset_run_resumes_to_identical_weights(tmp_path, data_dir):
    """Warm-up, cosine, min-SNR weights and the EMA's warm-up all follow the checkpointed
    step, so a crashed and resumed run ends where an uninterrupted one does."""
    config = tiny_config(preset="fast", warmup_steps=2, lr_final=0.1, ema_decay=0.99)
    Trainer(config, tmp_path / "straight", data_dir).run()

    def crash_mid_epoch_two(state):
        if state.step == 4:
            raise KeyboardInterrupt

    crashing = Trainer(config, tmp_path / "crashed", data_dir, before_step=crash_mid_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    Trainer.resume(tmp_path / "crashed", data_dir).run()
    straight, resumed = (load_checkpoint(tmp_path / d / CHECKPOINT_NAME)
                         for d in ("straight", "crashed"))  # fmt: skip
    assert resumed.meta["step"] == straight.meta["step"] == 9
    for name, value in straight.ema_weights.items():
        assert torch.equal(value, resumed.ema_weights[name]), name
    assert straight.scheduler == resumed.scheduler


def test_a_run_keeps_its_weak_twin_after_the_twin_epoch(tmp_path, data_dir):
    """twin.safetensors holds the EMA weights the run had after `twin_epoch`, loads as a
    guide, and is not written when the run ends at that epoch (it would be the model)."""
    from diffumnist.sampling import load_guide

    config = tiny_config(kind="time", ema_decay=0.9, twin_epoch=1)
    epoch_one = {}

    def keep_epoch_one(state):
        if state.step == 3 and not epoch_one:  # epoch 1 (3 steps) just ended
            epoch_one.update({k: v.clone() for k, v in state.ema.state_dict().items()})

    Trainer(config, tmp_path / "run", data_dir, before_step=keep_epoch_one).run()
    twin = load_checkpoint(tmp_path / "run" / "twin.safetensors")
    assert twin.meta["epoch"] == 1 and twin.ema_weights is None and twin.optimizer is None
    for name, value in epoch_one.items():
        assert torch.equal(value, twin.weights[name]), name
    final = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME).ema_weights
    assert any(not torch.equal(final[k], v) for k, v in epoch_one.items() if v.is_floating_point())
    guide = load_guide(str(tmp_path / "run" / "twin.safetensors"), config.resolved().model_config())
    assert torch.equal(
        guide.state_dict()["in_block.0.0.weight"].float(), epoch_one["in_block.0.0.weight"]
    )

    Trainer(tiny_config(kind="time", epochs=1, twin_epoch=1), tmp_path / "short", data_dir).run()
    assert not (tmp_path / "short" / "twin.safetensors").exists()
    for kind in ("time", "class"):
        assert TrainConfig(kind=kind, preset="fast").resolved().twin_epoch == 1
        assert TrainConfig(kind=kind).resolved().twin_epoch == 0


def test_min_snr_weights_cap_the_signal_to_noise_ratio_at_gamma():
    from diffumnist.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion(300)
    t = torch.arange(1, 301)
    snr = diffusion.alphas_cumprod / (1 - diffusion.alphas_cumprod)
    weight = diffusion.min_snr_weight(t, 5.0)
    assert torch.allclose(weight, torch.where(snr > 5, 5 / snr, torch.ones_like(snr)))
    assert weight[0] < 0.01 and weight[-1] == 1.0  # nearly clean steps count least
