"""A training run's folder: what is written there, atomically, and read back on resume.

    config.json        the TrainConfig, written when the run starts (and when it is extended)
    loss.jsonl         one line per optimizer step, appended at the end of every epoch
    last.safetensors   the latest checkpoint, replaced atomically after every epoch
    previews/          a small fixed-seed sample set per epoch (the figures use them)
    eval.jsonl         judge scores during training, when asked for

Only one process writes (rank 0 of a distributed run); the others hold a `RunFolder` with
`writes=False`, whose writing methods do nothing, and read the checkpoint like rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from diffumnist.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.files import remove_partial_writes, write_atomic

CHECKPOINT_NAME = "last.safetensors"
TWIN_NAME = "twin.safetensors"  # the weak twin a run keeps (TrainConfig.twin_epoch)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the last checkpoint is intact."""


def read_run_config(run_dir: Path) -> TrainConfig:
    """The configuration of an existing run folder, from its config.json."""
    config_path = Path(run_dir) / "config.json"
    try:
        return TrainConfig.from_dict(json.loads(config_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume: {config_path} is missing or unreadable ({exc})") from exc


def _logged_step(line: str) -> float:
    """The step of one loss.jsonl line; infinity for a partial line (never kept)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class RunFolder:
    """The files of one run in `path`; with writes=False (ranks other than 0) read-only."""

    def __init__(self, path: Path, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes
        self.checkpoint_path = self.path / CHECKPOINT_NAME
        self.twin_path = self.path / TWIN_NAME
        self._log_path = self.path / "loss.jsonl"

    def open(self, config: TrainConfig) -> Checkpoint | None:
        """The checkpoint to resume from (None for a new run, whose folder is then set up).

        The writer first removes what a process killed mid-write left behind.
        """
        if self.writes:
            for name in (CHECKPOINT_NAME, TWIN_NAME, "config.json", "loss.jsonl"):
                remove_partial_writes(self.path / name)
        if self.checkpoint_path.exists():
            ckpt = load_checkpoint(self.checkpoint_path)
            saved = TrainConfig.from_dict(ckpt.meta.get("train", {}))
            # resolved: a checkpoint from before a setting existed holds the preset's value
            extended = dataclasses.replace(saved, epochs=config.epochs).resolved()
            if extended.to_dict() != config.to_dict():
                raise ConfigError(f"{self.checkpoint_path} belongs to a different configuration")
            if config.epochs < ckpt.meta["epoch"]:
                raise ConfigError(
                    f"{self.path} has trained {ckpt.meta['epoch']} epochs; it can only extend"
                )
            if config.epochs != saved.epochs:  # extended: the LR decays on at the same rate
                self._write_config(config)
            self._truncate_log(ckpt.meta["step"])
            return ckpt
        self._write_config(config, start_log=True)
        return None

    def _write_config(self, config: TrainConfig, start_log: bool = False) -> None:
        """config.json (and for a new run an empty loss log); a disk error is one line."""
        if not self.writes:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path / "config.json", json.dumps(config.to_dict(), indent=2).encode())
            if start_log:
                self._log_path.write_text("")
        except OSError as exc:
            raise ConfigError(f"cannot write to run folder {self.path}: {exc.strerror}") from exc

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint (a crash mid-epoch leaves some), and a
        partial last line left by a process killed mid-append."""
        if not self.writes:
            return
        lines = self._log_path.read_text().splitlines() if self._log_path.exists() else []
        kept = [line for line in lines if _logged_step(line) <= step]
        write_atomic(self._log_path, "".join(f"{line}\n" for line in kept).encode())

    def append_log(self, entries: list[dict]) -> None:
        if self.writes:
            with self._log_path.open("a") as log:
                log.write("".join(json.dumps(entry) + "\n" for entry in entries))

    def append_eval(self, entry: dict) -> None:
        if self.writes:
            with (self.path / "eval.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")

    def save_preview(self, epoch: int, arrays: dict[str, torch.Tensor]) -> None:
        if self.writes:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **{k: v.detach().cpu().numpy() for k, v in arrays.items()})
            write_atomic(self.path / "previews" / f"epoch_{epoch:03d}.npz", buffer.getvalue())

    def save_checkpoint(self, ckpt: Checkpoint) -> None:
        if self.writes:
            save_checkpoint(self.checkpoint_path, ckpt)

    def save_twin(self, ckpt: Checkpoint) -> None:
        if self.writes:
            save_checkpoint(self.twin_path, ckpt)

    @contextlib.contextmanager
    def disk_errors_stop_training(self) -> Iterator[None]:
        """Turn a failed write (disk full, folder gone) into a TrainingError that says what
        survived: write_atomic never replaces the checkpoint with a partial file."""
        try:
            yield
        except OSError as exc:
            kept = (
                f"the previous checkpoint {self.checkpoint_path} is intact; free space and "
                "rerun with --resume"
                if self.checkpoint_path.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingError(
                f"cannot write to {self.path}: {exc.strerror or exc}; {kept}"
            ) from exc
