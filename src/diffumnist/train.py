"""The training loop: recipe defaults, bf16 autocast, EMA, per-epoch atomic checkpoints.

The recipe decays the learning rate once per epoch; a run with a warm-up or a cosine (the
`fast` preset) sets it before every optimizer step from the step count, so it resumes exactly.

What differs between the models (their batch randomness, loss and preview) is asked of the
model kind (kinds/); what is written where is the run folder's business (rundir.py). All
randomness after initialisation comes from one CPU generator whose state is checkpointed,
so a run that is killed and resumed ends with the same weights as one that never stopped.

Under torchrun the same loop runs data-parallel (see distributed.py): every rank draws the
global batch and its randomness, trains on its share, and only rank 0 writes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from diffumnist.batchnorm import average_buffers, use_global_batchnorm
from diffumnist.checkpoint import Checkpoint, check_model_size
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.data import iterate_batches, load_split, to_unit
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.distributed import World, current_world
from diffumnist.kinds import ModelKind, build_net, get_kind
from diffumnist.models import model_for
from diffumnist.rundir import CHECKPOINT_NAME, RunFolder, TrainingError, read_run_config
from diffumnist.runtime import autocast, resolve_device, resolve_precision

__all__ = ["CHECKPOINT_NAME", "TrainState", "Trainer", "TrainingError", "read_run_config"]


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

    @classmethod
    def new(cls, config: TrainConfig, device: torch.device, world: World,
            steps_per_epoch: int, total_steps: int) -> TrainState:  # fmt: skip
        """Seeded initial weights (an EMA copy of them if asked), Adam, the LR schedule."""
        torch.manual_seed(config.seed)
        net = build_net(config.model_config()).to(device, memory_format=torch.channels_last)
        if world.size > 1 and config.batchnorm == "global":
            net = use_global_batchnorm(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        scheduler = lr_schedule(optimizer, config, steps_per_epoch, total_steps)
        ema = None
        if config.ema_decay > 0:
            ema = build_net(config.model_config()).to(device, memory_format=torch.channels_last)
            ema.load_state_dict(net.state_dict())
            ema.requires_grad_(False)
        return cls(net, optimizer, scheduler, torch.Generator().manual_seed(config.seed), ema)

    def restore(self, ckpt: Checkpoint) -> None:
        self.net.load_state_dict(ckpt.weights)
        if ckpt.optimizer is None or ckpt.rng_state is None or ckpt.scheduler is None:
            raise ConfigError("this checkpoint holds weights only and cannot resume training")
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.scheduler)
        self.generator.set_state(ckpt.rng_state)
        if self.ema is not None and ckpt.ema_weights is not None:
            self.ema.load_state_dict(ckpt.ema_weights)
        self.epoch, self.step = ckpt.meta["epoch"], ckpt.meta["step"]

    def checkpoint(self, config: TrainConfig, done: bool) -> Checkpoint:
        return Checkpoint(
            model_config=config.model_config(),
            weights=self.net.state_dict(),
            ema_weights=self.ema.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng_state=self.generator.get_state(),
            meta={"epoch": self.epoch, "step": self.step, "done": done,
                  "train": config.to_dict()},
        )  # fmt: skip

    def twin(self, config: TrainConfig) -> Checkpoint:
        """The weights as they are now (the EMA where the run keeps one), to guide the
        finished model: a copy of the same network trained for less time is the weaker
        model autoguidance (Karras et al. 2024) pushes away from, as the shipped time twin
        is the recipe run after epoch 1."""
        net = self.ema if self.ema is not None else self.net
        return Checkpoint(model_config=config.model_config(), weights=net.state_dict(),
                          meta={"epoch": self.epoch, "step": self.step})  # fmt: skip

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        """ema ← decay·ema + (1 − decay)·net, for parameters and BatchNorm running statistics,
        with decay = ema_decay_at(beta, self.step): the EMA forgets the random initialisation
        within a few dozen steps instead of ~1/(1 − β).

        Copying the raw net's BN statistics instead would pair them with weights they were
        not measured for; while the learning rate is high that mismatch ruins EMA samples.
        """
        if self.ema is None:
            return
        decay = ema_decay_at(beta, self.step)
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - decay)
        for ema_buffer, buffer in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            if ema_buffer.is_floating_point():
                ema_buffer.lerp_(buffer, 1.0 - decay)
            else:
                ema_buffer.copy_(buffer)


def ema_decay_at(beta: float, step: int) -> float:
    """The EMA decay after `step` completed optimizer steps: min(β, (1 + s)/(10 + s)), and 0
    (a copy of the weights) at the first update, as diffusers' EMAModel warms up. The EMA
    then averages about the last s/10 + 1 steps until that reaches 1/(1 − β)."""
    return 0.0 if step == 0 else min(beta, (1 + step) / (10 + step))


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:  # fmt: skip
    """The recipe's ExponentialLR, stepped once per epoch; with a warm-up or a cosine, a
    LambdaLR stepped after every optimizer step (see `steps_lr_per_step`)."""
    if not steps_lr_per_step(config):
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    factor = functools.partial(lr_factor, config, steps_per_epoch, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_lr_per_step(config: TrainConfig) -> bool:
    return config.warmup_steps > 0 or config.lr_final is not None


def lr_factor(config: TrainConfig, steps_per_epoch: int, total_steps: int, step: int) -> float:
    """lr(step) / lr for the optimizer step after `step` completed ones: a linear warm-up
    over warmup_steps, times a cosine from 1 to lr_final at total_steps (else lr_gamma per
    completed epoch). Extending a finished run stretches the cosine to the new end.

    The warm-up takes at most a fifth of the run: a 100-step run warmed up over the fast
    preset's 200 steps would end before it reached its learning rate."""
    warmup = min(config.warmup_steps, total_steps // 5)
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if config.lr_final is None:
        return warm * config.lr_gamma ** (step // steps_per_epoch)
    progress = min(step / max(total_steps, 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (config.lr_final + (1.0 - config.lr_final) * cosine)


def check_batches_split(config: TrainConfig, data_dir: Path | str | None, world_size: int) -> None:
    """Every batch, the last one of an epoch included, must give each rank an image."""
    num_images = len(load_split("train", data_dir)[1][: config.subset])
    smallest = min(config.batch_size, num_images % config.batch_size or num_images)
    if smallest < world_size:
        raise ConfigError(
            f"a batch of {smallest} images cannot be shared by {world_size} processes; "
            "use fewer processes or a larger --batch-size/--subset"
        )


def replicated(net: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`net` wrapped in DistributedDataParallel when there are several ranks."""
    if world.size == 1:
        return net
    device_ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    # buffers are kept identical by the global BatchNorm or by average_buffers
    return nn.parallel.DistributedDataParallel(
        net, device_ids=device_ids, forward_sync_buffers=False
    )


class LossLog:
    """Per-step losses kept where they were computed and read back every `every` steps.

    Reading a loss makes the host wait for the device; on a GPU that wait per step costs
    more than the step, so the values are gathered (and summed over the ranks) in one go.
    A non-finite loss stops training then, before the epoch could be checkpointed.
    """

    def __init__(self, world: World, checkpoint_path: Path, every: int = 50) -> None:
        self.world, self.checkpoint_path, self.every = world, checkpoint_path, every
        self.pending: list[tuple[int, int, torch.Tensor, int]] = []
        self.entries: list[dict] = []  # read, not yet taken: {"step", "epoch", "loss"}

    def add(self, step: int, epoch: int, weighted: torch.Tensor, batch: int) -> bool:
        """Keep one step's share-weighted loss; True when this read the pending ones."""
        self.pending.append((step, epoch, weighted, batch))
        if len(self.pending) < self.every:
            return False
        self._read()
        return True

    def take(self) -> list[dict]:
        """Every entry so far (the batch means of the global batches), oldest first."""
        self._read()
        entries, self.entries = self.entries, []
        return entries

    def _read(self) -> None:
        if not self.pending:
            return
        sums = self.world.sum(torch.stack([weighted for _, _, weighted, _ in self.pending]))
        batches = torch.tensor([batch for *_, batch in self.pending], dtype=torch.float64)
        for (step, epoch, _, _), value in zip(
            self.pending, (sums.cpu() / batches).tolist(), strict=True
        ):
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at step {step}; training stopped and "
                    f"{self.checkpoint_path} keeps the last good epoch (try a lower --lr)"
                )
            self.entries.append({"step": step, "epoch": epoch, "loss": value})
        self.pending = []


class Trainer:
    """Runs (or resumes) one training run into `run_dir`; under torchrun, one rank of it.

    Seams for tests and extensions: `kind` replaces the model kind's objective (draws, loss,
    preview), and `before_step(state)` is called before every optimizer step.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, data_dir: Path | str | None = None,
                 *, kind: ModelKind | None = None,
                 before_step: Callable[[TrainState], None] | None = None) -> None:  # fmt: skip
        self.config = config.resolved()
        check_model_size(self.config.model_config())
        self.kind = kind or get_kind(self.config.kind)
        self.before_step = before_step
        self.data_dir = data_dir
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.diffusion = GaussianDiffusion.from_config(self.config.model_config()).to(self.device)
        self.world = current_world()
        self.folder = RunFolder(run_dir, writes=self.world.is_main)

    @classmethod
    def resume(cls, run_dir: Path, data_dir: Path | str | None = None) -> Trainer:
        """A trainer for an existing run folder, configured from its config.json."""
        return cls(read_run_config(run_dir), run_dir, data_dir)

    def run(self) -> Path:
        """Train to the configured end; returns the checkpoint path."""
        images, labels = self._load_data()
        per_epoch = math.ceil(len(images) / self.config.batch_size)
        total = min(self.config.epochs * per_epoch, self.config.max_steps or math.inf)
        state = self._start(per_epoch, total)
        net = replicated(state.net, self.world, self.device)
        losses = LossLog(self.world, self.folder.checkpoint_path)
        with tqdm(total=total, initial=state.step, unit="step", dynamic_ncols=True,
                  disable=not self.world.is_main) as bar:  # fmt: skip
            while state.epoch < self.config.epochs and state.step < total:
                bar.set_description(
                    f"{self.kind.name} epoch {state.epoch + 1}/{self.config.epochs}"
                )
                net.train()
                steps = 0
                for index in iterate_batches(len(images), self.config.batch_size, state.generator):
                    if self.before_step is not None:
                        self.before_step(state)
                    weighted = self.step(state, net, images, labels, index.to(self.device))
                    steps += 1
                    if losses.add(state.step, state.epoch + 1, weighted, len(index)):
                        bar.set_postfix(loss=f"{losses.entries[-1]['loss']:.4f}", refresh=False)
                    bar.update(1)
                    if state.step >= total:
                        break
                self._end_epoch(state, losses.take(), complete=steps == per_epoch)
        self.world.barrier()  # rank 0 has written the last checkpoint
        return self.folder.checkpoint_path

    def step(self, state: TrainState, net: nn.Module, images: torch.Tensor,
             labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """One optimizer step on the global batch `images[index]`; returns this rank's share
        of the batch's summed loss (float64, on the device: reading it would wait for it).

        This rank computes the loss of its share; weighted by the share's size, DDP's
        gradient average is the gradient of the whole batch's mean (weight 1 on one process).
        """
        share = self.world.shard(len(index))
        draws = self.kind.draw(len(index), state.generator, self.diffusion, self.config)
        draws = {name: value[share].to(self.device) for name, value in draws.items()}
        mine = index[share]
        x0 = to_unit(images[mine]).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            loss = self.kind.loss(net, x0, labels[mine], draws, self.diffusion, self.config)
        state.optimizer.zero_grad(set_to_none=True)
        (loss * (len(mine) * self.world.size / len(index))).backward()
        state.optimizer.step()
        if self.world.size > 1 and self.config.batchnorm == "local":
            average_buffers(state.net)
        state.update_ema(self.config.ema_decay)
        state.step += 1
        if steps_lr_per_step(self.config):
            state.scheduler.step()
        return loss.detach().double() * len(mine)

    def _start(self, steps_per_epoch: int, total_steps: int) -> TrainState:
        """A fresh or restored state; rank 0 tidies the run folder before the others read it."""
        state = TrainState.new(self.config, self.device, self.world, steps_per_epoch, total_steps)
        for turn in (self.world.is_main, not self.world.is_main):
            if turn and (ckpt := self.folder.open(self.config)) is not None:
                state.restore(ckpt)
            self.world.barrier()
        steps = self.world.all_gather(state.step)
        if len(set(steps)) > 1:
            raise ConfigError(
                f"the ranks found checkpoints at different steps {steps}; the run folder "
                f"{self.folder.path} must be one folder every rank reads"
            )
        return state

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split in memory; rank 0 reads (or downloads) it before the others."""
        if self.world.is_main:
            load_split("train", self.data_dir)
        self.world.barrier()
        images, labels = load_split("train", self.data_dir)
        subset = slice(self.config.subset)
        check_batches_split(self.config, self.data_dir, self.world.size)
        return images[subset].to(self.device), labels[subset].to(self.device)

    def _end_epoch(self, state: TrainState, log: list[dict], complete: bool) -> None:
        """Count the epoch (if whole); rank 0 writes its log, preview, scores, checkpoint."""
        if complete:
            state.epoch += 1
            if not steps_lr_per_step(self.config):
                state.scheduler.step()
        if not self.folder.writes:
            return
        with self.folder.disk_errors_stop_training():
            self.folder.append_log(log)
            if complete and self._every(self.config.preview_every, state.epoch):
                model = model_for(self.config.model_config(), state.net)  # the raw weights
                arrays = self.kind.preview(model, self.config, self.precision, self.data_dir)
                self.folder.save_preview(state.epoch, arrays)
            if complete and self.kind.samples and self._every(self.config.eval_every, state.epoch):
                self._score(state)
            state.net.train()
            done = not complete or state.epoch >= self.config.epochs
            if complete and not done and state.epoch == self.config.twin_epoch:
                self.folder.save_twin(state.twin(self.config))  # before the checkpoint past it
            self.folder.save_checkpoint(state.checkpoint(self.config, done))

    def _score(self, state: TrainState) -> None:
        """Judge `eval_n` fresh samples of the EMA (else raw) weights; log one line."""
        from diffumnist.evaluate import training_scores

        net = state.ema if state.ema is not None else state.net
        model = model_for(self.config.model_config(), net)
        scores = training_scores(model, self.config.eval_n, self.precision, self.data_dir)
        entry = {"epoch": state.epoch, "step": state.step, **scores}
        self.folder.append_eval(entry)
        tqdm.write(f"epoch {state.epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in entry.items()))

    def _every(self, every: int, epoch: int) -> bool:
        return bool(every) and (epoch % every == 0 or epoch == self.config.epochs)
