"""The training loop: recipe defaults, bf16 autocast, EMA, per-epoch atomic checkpoints.

A run folder holds `config.json`, `loss.jsonl` (one line per optimizer step),
`last.safetensors` (the latest checkpoint, replaced atomically after every epoch) and
`previews/` (small per-epoch sample sets the figures are drawn from). All randomness after
initialisation comes from one CPU generator whose state is checkpointed, so a run that is
killed and resumed ends with the same weights as one that never stopped.

Under torchrun the same loop runs data-parallel (see distributed.py): every rank draws the
global batch and its randomness, trains on its share, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from diffumnist.checkpoint import (
    Checkpoint,
    check_model_size,
    load_checkpoint,
    remove_partial_writes,
    save_checkpoint,
    write_atomic,
)
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.data import iterate_batches, load_split, to_unit
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.distributed import World, average_buffers, current_world, use_global_batchnorm
from diffumnist.models import Denoiser, DiffusionModel
from diffumnist.nets import build_net
from diffumnist.runtime import autocast, resolve_device, resolve_precision

CHECKPOINT_NAME = "last.safetensors"
PREVIEW_SEED = 1234


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the last checkpoint is intact."""


@dataclass
class TrainState:
    """Everything that changes while training, and is saved in a checkpoint."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    ema: nn.Module | None
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps


def _new_state(config: TrainConfig, device: torch.device, world: World) -> TrainState:
    torch.manual_seed(config.seed)
    net = build_net(config.model_config()).to(device, memory_format=torch.channels_last)
    if world.size > 1 and config.batchnorm == "global":
        net = use_global_batchnorm(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    generator = torch.Generator().manual_seed(config.seed)
    ema = None
    if config.ema_decay > 0:
        ema = build_net(config.model_config()).to(device, memory_format=torch.channels_last)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
    return TrainState(net, optimizer, scheduler, generator, ema)


def _restore(state: TrainState, ckpt: Checkpoint) -> None:
    state.net.load_state_dict(ckpt.weights)
    if ckpt.optimizer is None or ckpt.rng_state is None or ckpt.scheduler is None:
        raise ConfigError("this checkpoint holds weights only and cannot resume training")
    state.optimizer.load_state_dict(ckpt.optimizer)
    state.scheduler.load_state_dict(ckpt.scheduler)
    state.generator.set_state(ckpt.rng_state)
    if state.ema is not None and ckpt.ema_weights is not None:
        state.ema.load_state_dict(ckpt.ema_weights)
    state.epoch, state.step = ckpt.meta["epoch"], ckpt.meta["step"]


@torch.no_grad()
def _update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·net, for parameters and BatchNorm running statistics.

    Copying the raw net's BN statistics instead would pair them with weights they were not
    measured for; while the learning rate is high that mismatch ruins EMA samples.
    """
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), net.buffers(), strict=True):
        if ema_buffer.is_floating_point():
            ema_buffer.lerp_(buffer, 1.0 - decay)
        else:
            ema_buffer.copy_(buffer)


def _logged_step(line: str) -> float:
    """The step of one loss.jsonl line; infinity for a partial line (never kept)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _save(run_dir: Path, config: TrainConfig, state: TrainState, done: bool) -> None:
    ckpt = Checkpoint(
        model_config=config.model_config(),
        weights=state.net.state_dict(),
        ema_weights=state.ema.state_dict() if state.ema is not None else None,
        optimizer=state.optimizer.state_dict(),
        scheduler=state.scheduler.state_dict(),
        rng_state=state.generator.get_state(),
        meta={"epoch": state.epoch, "step": state.step, "done": done, "train": config.to_dict()},
    )
    save_checkpoint(run_dir / CHECKPOINT_NAME, ckpt)


def read_run_config(run_dir: Path) -> TrainConfig:
    """The configuration of an existing run folder, from its config.json."""
    config_path = Path(run_dir) / "config.json"
    try:
        return TrainConfig.from_dict(json.loads(config_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume: {config_path} is missing or unreadable ({exc})") from exc


class Trainer:
    """Runs (or resumes) one training run into `run_dir`; under torchrun, one rank of it."""

    def __init__(self, config: TrainConfig, run_dir: Path, data_dir: Path | str | None = None):
        self.config = config.resolved()
        check_model_size(self.config.model_config())
        self.run_dir = Path(run_dir)
        self.data_dir = data_dir
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.diffusion = GaussianDiffusion.from_config(self.config.model_config()).to(self.device)
        self.world = current_world()
        self.state: TrainState | None = None

    @classmethod
    def resume(cls, run_dir: Path, data_dir: Path | str | None = None) -> Trainer:
        """A trainer for an existing run folder, configured from its config.json."""
        return cls(read_run_config(run_dir), run_dir, data_dir)

    def _prepare_run_dir(self) -> TrainState:
        """A fresh or restored state; rank 0 tidies the run folder before the others read it."""
        state = _new_state(self.config, self.device, self.world)
        if self.world.is_main:
            self._restore_or_start(state)
        self.world.barrier()
        if not self.world.is_main:
            self._restore_or_start(state)
        steps = self.world.all_gather(state.step)
        if len(set(steps)) > 1:
            raise ConfigError(
                f"the ranks found checkpoints at different steps {steps}; the run folder "
                f"{self.run_dir} must be one folder every rank reads"
            )
        return state

    def _restore_or_start(self, state: TrainState) -> None:
        ckpt_path = self.run_dir / CHECKPOINT_NAME
        if self.world.is_main:
            for name in (CHECKPOINT_NAME, "config.json", "loss.jsonl"):
                remove_partial_writes(self.run_dir / name)  # left by a process killed mid-write
        if ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            saved_config = TrainConfig.from_dict(ckpt.meta.get("train", {}))
            if saved_config.to_dict() != self.config.to_dict():
                raise ConfigError(f"{ckpt_path} belongs to a different configuration")
            _restore(state, ckpt)
            if self.world.is_main:
                self._truncate_log(state.step)
        elif self.world.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(
                    self.run_dir / "config.json",
                    json.dumps(self.config.to_dict(), indent=2).encode(),
                )
                (self.run_dir / "loss.jsonl").write_text("")
            except OSError as exc:
                raise ConfigError(
                    f"cannot write to run folder {self.run_dir}: {exc.strerror}"
                ) from exc

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint (a crash mid-epoch leaves some).

        A process killed mid-append leaves a partial last line, which is dropped too.
        """
        log_path = self.run_dir / "loss.jsonl"
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        kept = [line for line in lines if _logged_step(line) <= step]
        write_atomic(log_path, "".join(f"{line}\n" for line in kept).encode())

    def _load_data(self) -> torch.Tensor:
        """The training split in memory; rank 0 reads (or downloads) it before the others."""
        if self.world.is_main:
            load_split("train", self.data_dir)
        self.world.barrier()
        images, labels = load_split("train", self.data_dir)
        if self.config.subset is not None:
            images, labels = images[: self.config.subset], labels[: self.config.subset]
        self.labels = labels.to(self.device)
        return images.to(self.device)

    def _draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The randomness of one batch of n images: class dropout, t and ε, in that order.

        Drawn on the CPU generator for the whole global batch, so every rank (and a run
        with any number of ranks) consumes the generator identically.
        """
        draws = {}
        if self.config.kind == "class":
            draws["keep"] = torch.rand(n, generator=generator) >= self.config.p_uncond
        if self.config.kind != "denoiser":
            draws["t"] = self.diffusion.sample_timesteps(n, generator)
        draws["noise"] = torch.randn((n, 1, 28, 28), generator=generator)
        return draws

    def _loss(
        self, net: nn.Module, x0: torch.Tensor, labels: torch.Tensor, draws: dict
    ) -> torch.Tensor:
        """The recipe's objective for this kind of model on one batch x0 (N, 1, 28, 28)."""
        draws = {name: value.to(x0.device) for name, value in draws.items()}
        if self.config.kind == "denoiser":
            return F.mse_loss(net(x0 + self.config.sigma * draws["noise"]).float(), x0)
        c = None
        if self.config.kind == "class":
            c = F.one_hot(labels, 10).float() * draws["keep"].float()[:, None]
        return self.diffusion.training_loss(net, x0, draws["t"], draws["noise"], c)

    def run(self) -> Path:
        """Train to the configured end; returns the checkpoint path."""
        state = self.state = self._prepare_run_dir()
        images = self._load_data()
        self.check_batches_split(self.world.size)
        self.parallel_net = self._parallel(state.net)
        total_steps = self.config.epochs * math.ceil(images.shape[0] / self.config.batch_size)
        if self.config.max_steps is not None:
            total_steps = min(total_steps, self.config.max_steps)
        with tqdm(
            total=total_steps, initial=state.step, unit="step", dynamic_ncols=True,
            disable=not self.world.is_main,
        ) as bar:  # fmt: skip
            while state.epoch < self.config.epochs and state.step < total_steps:
                self._run_epoch(state, images, bar, total_steps)
        self.world.barrier()  # rank 0 has written the last checkpoint
        return self.run_dir / CHECKPOINT_NAME

    def check_batches_split(self, world_size: int) -> None:
        """Every batch, the last one of an epoch included, must give each rank an image."""
        num_images = len(load_split("train", self.data_dir)[1][: self.config.subset])
        smallest = min(self.config.batch_size, num_images % self.config.batch_size or num_images)
        if smallest < world_size:
            raise ConfigError(
                f"a batch of {smallest} images cannot be shared by {world_size} processes; "
                "use fewer processes or a larger --batch-size/--subset"
            )

    def _parallel(self, net: nn.Module) -> nn.Module:
        """`net` wrapped in DistributedDataParallel when there are several ranks."""
        if self.world.size == 1:
            return net
        device_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
        # buffers are kept identical by the global BatchNorm or by average_buffers
        return nn.parallel.DistributedDataParallel(
            net, device_ids=device_ids, forward_sync_buffers=False
        )

    def _run_epoch(self, state: TrainState, images: torch.Tensor, bar: tqdm, total: int) -> None:
        state.net.train()
        bar.set_description(f"{self.config.kind} epoch {state.epoch + 1}/{self.config.epochs}")
        log_lines: list[str] = []
        batches = list(iterate_batches(images.shape[0], self.config.batch_size, state.generator))
        for position, index in enumerate(batches):
            started = time.perf_counter()
            value = self._step(state, images, index.to(self.device))
            log_lines.append(
                json.dumps({"step": state.step, "epoch": state.epoch + 1, "loss": value})
            )
            rate = index.shape[0] / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
            if state.step >= total and position < len(batches) - 1:
                self._finish_epoch(state, log_lines, epoch_complete=False)
                return
        self._finish_epoch(state, log_lines, epoch_complete=True)

    def _step(self, state: TrainState, images: torch.Tensor, index: torch.Tensor) -> float:
        """One optimizer step on the batch `images[index]`; returns its mean loss.

        With several ranks this rank computes the loss of its share; weighting it by the
        share's size makes DDP's gradient average the gradient of the whole batch's mean.
        """
        share = self.world.shard(index.shape[0])
        draws = {
            name: value[share]
            for name, value in self._draw(index.shape[0], state.generator).items()
        }
        mine = index[share]
        x0 = to_unit(images[mine]).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            loss = self._loss(self.parallel_net, x0, self.labels[mine], draws)
        state.optimizer.zero_grad(set_to_none=True)
        weight = mine.shape[0] * self.world.size / index.shape[0]
        (loss * weight).backward()  # weight 1 on one process: exact, gradients unchanged
        value = self.world.sum(loss.item() * mine.shape[0]) / index.shape[0]
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {state.step + 1}; training stopped and "
                f"{self.run_dir / CHECKPOINT_NAME} keeps the last good epoch (try a lower --lr)"
            )
        state.optimizer.step()
        if self.world.size > 1 and self.config.batchnorm == "local":
            with torch.no_grad():
                average_buffers(state.net)
        if state.ema is not None:
            _update_ema(state.ema, state.net, self.config.ema_decay)
        state.step += 1
        return value

    def _finish_epoch(self, state: TrainState, log_lines: list[str], epoch_complete: bool) -> None:
        if epoch_complete:
            state.epoch += 1
            state.scheduler.step()
        if not self.world.is_main:
            return
        log_path = self.run_dir / "loss.jsonl"
        with self._disk_errors_stop_training(), log_path.open("a") as log:
            log.write("".join(f"{line}\n" for line in log_lines))
        done = not epoch_complete or state.epoch >= self.config.epochs
        with self._disk_errors_stop_training():
            if epoch_complete and self._due(self.config.preview_every, state.epoch):
                self._save_preview(state)
            evaluates = self.config.kind != "denoiser" and epoch_complete
            if evaluates and self._due(self.config.eval_every, state.epoch):
                self._evaluate(state)
            _save(self.run_dir, self.config, state, done=done)

    @contextlib.contextmanager
    def _disk_errors_stop_training(self) -> Iterator[None]:
        """Turn a failed write (disk full, folder gone) into a TrainingError that says what
        survived: write_atomic never replaces the checkpoint with a partial file."""
        try:
            yield
        except OSError as exc:
            ckpt_path = self.run_dir / CHECKPOINT_NAME
            kept = (
                f"the previous checkpoint {ckpt_path} is intact; free space and rerun with --resume"
                if ckpt_path.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingError(
                f"cannot write to {self.run_dir}: {exc.strerror or exc}; {kept}"
            ) from exc

    def _due(self, every: int, epoch: int) -> bool:
        return bool(every) and (epoch % every == 0 or epoch == self.config.epochs)

    def _evaluate(self, state: TrainState) -> None:
        """Score `eval_n` fresh samples with the judge; append one line to eval.jsonl."""
        from diffumnist.evaluate import generate, score_samples

        net = state.ema if state.ema is not None else state.net
        model = DiffusionModel(self.config.model_config(), net)
        images, labels = generate(
            model, self.config.eval_n, seed=PREVIEW_SEED, precision=self.precision, progress=False
        )
        scores = score_samples(images, labels, self.data_dir)
        entry = {"epoch": state.epoch, "step": state.step, "mnist_fid": scores["mnist_fid"],
                 "mnist_fid_floor": scores["mnist_fid_floor"]}  # fmt: skip
        if "guided_accuracy" in scores:
            entry["guided_accuracy"] = scores["guided_accuracy"]["overall"]
        with (self.run_dir / "eval.jsonl").open("a") as log:
            log.write(json.dumps(entry) + "\n")
        tqdm.write(f"epoch {state.epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in entry.items()))
        state.net.train()

    def _save_preview(self, state: TrainState) -> None:
        """A small fixed-seed sample set per epoch: what the epoch-comparison figures use.

        Drawn with the raw weights, the recipe's model, whether or not an EMA copy is kept.
        """
        net = state.net
        model_config = self.config.model_config()
        if self.config.kind == "denoiser":
            clean = to_unit(load_split("test", self.data_dir)[0][:8]).to(self.device)
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(PREVIEW_SEED))
            noisy = clean + self.config.sigma * noise.to(self.device)
            denoised = Denoiser(model_config, net).denoise(noisy)
            arrays = {"clean": clean, "noisy": noisy, "denoised": denoised}
        else:
            model = DiffusionModel(model_config, net)
            digits = torch.arange(10).repeat_interleave(4)
            c, n = (digits, None) if self.config.kind == "class" else (None, 40)
            samples, frames = model.sample(
                c, n=n, seed=PREVIEW_SEED, precision=self.precision, frame_every=10
            )
            # the process of the first sample of each digit, every 10th step
            arrays = {"samples": samples, "labels": digits, "frames": frames[:, ::4]}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: v.detach().cpu().numpy() for k, v in arrays.items()})
        write_atomic(self.run_dir / "previews" / f"epoch_{state.epoch:03d}.npz", buffer.getvalue())
        state.net.train()
