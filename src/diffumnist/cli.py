"""The `diffumnist` command: thin wrappers over the library.

Every user mistake ends as one line on stderr and exit code 2; nothing already written is
overwritten unless the new file is complete (outputs are written atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from diffumnist.checkpoint import write_atomic
from diffumnist.config import MODEL_KINDS, ConfigError, DeviceName, Precision, TrainConfig
from diffumnist.train import CHECKPOINT_NAME, Trainer, TrainingError

_FLAG_TYPES = {"int": int, "float": float}
_FLAG_CHOICES = {"Precision": get_args(Precision), "DeviceName": get_args(DeviceName)}


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def parse_digits(text: str) -> list[int]:
    """'0-9', '3', '1,3,5' or '0-4,7' -> list of digits, each checked to lie in 0..9."""
    digits: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if not (0 <= first <= 9 and 0 <= last <= 9 and first <= last):
                raise ValueError
            digits.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(
            f"--digits must be digits 0-9 like 0-9, 3 or 1,3,5; got {text!r}"
        ) from None
    return digits


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and defaults taken from the dataclass."""
    for field in dataclasses.fields(TrainConfig):
        if field.name == "kind":
            continue
        flag = "--" + field.name.replace("_", "-")
        kwargs = {"help": field.metadata["help"], "default": argparse.SUPPRESS}
        if field.type in _FLAG_CHOICES:
            kwargs["choices"] = _FLAG_CHOICES[field.type]
        else:
            kwargs["type"] = _FLAG_TYPES[field.type.split(" ")[0]]
        parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffumnist", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a model with the recipe's defaults")
    train.add_argument("kind", choices=MODEL_KINDS, help="which model to train")
    train.add_argument("--out", type=Path, help="run folder (default runs/KIND)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    _add_train_flags(train)

    sample = commands.add_parser("sample", help="generate digits from a checkpoint")
    sample.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    sample.add_argument("--digits", default="0-9", help="class model: digits, e.g. 0-9 or 1,3")
    sample.add_argument("--per-digit", type=positive_int, default=4, help="samples per digit")
    sample.add_argument("--n", type=positive_int, default=16, help="time model: samples")
    sample.add_argument("--guidance-scale", type=finite_float, default=5.0, help="CFG scale γ")
    sample.add_argument("--seed", type=int, default=42, help="seed of the initial noise")
    sample.add_argument("--device", choices=get_args(DeviceName), default="auto")
    sample.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG")
    sample.add_argument("--gif", type=Path, help="also write the sampling process as a GIF")
    sample.add_argument("--npz", type=Path, help="also write images/labels as .npz")

    demo = commands.add_parser("demo", help="train the class model briefly, then sample")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    demo.add_argument("--steps", type=positive_int, default=400, help="training steps")
    demo.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    return parser


def _png_bytes(images: torch.Tensor, nrow: int) -> bytes:
    from diffumnist.viz import save_grid

    buffer = io.BytesIO()
    save_grid(images, buffer, nrow=nrow, scale=2)
    return buffer.getvalue()


def _gif_bytes(frames: torch.Tensor, nrow: int) -> bytes:
    from diffumnist.viz import save_gif

    buffer = io.BytesIO()
    save_gif(frames, buffer, nrow=nrow)
    return buffer.getvalue()


def _check_writable(paths: Sequence[Path | None]) -> None:
    """Fail before any work if an output folder is missing or read-only."""
    import os

    for path in paths:
        if path is None:
            continue
        folder = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ConfigError(f"output {path} is a folder; give a file name")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write {path}: folder {folder} is missing or read-only")


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in vars(args).items()
        if k in {f.name for f in dataclasses.fields(TrainConfig)} and k != "kind"
    }
    run_dir = args.out or Path("runs") / args.kind
    if args.resume:
        if overrides:
            raise ConfigError(
                "--resume takes its settings from the run's config.json; "
                f"drop {', '.join('--' + k.replace('_', '-') for k in overrides)}"
            )
        trainer = Trainer.resume(run_dir, args.data_dir)
    else:
        if (run_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume or another --out")
        trainer = Trainer(TrainConfig(kind=args.kind, **overrides), run_dir, args.data_dir)
    path = trainer.run()
    print(f"checkpoint: {path}")
    return 0


def write_samples(model, args: argparse.Namespace, digits: list[int] | None) -> None:
    """Sample with `model` and write the grid (and GIF / npz) atomically."""
    if model.config.kind == "class":
        c = torch.tensor(digits).repeat_interleave(args.per_digit)
        samples, frames = model.sample(c, guidance_scale=args.guidance_scale, seed=args.seed)
        # one row per repetition, one column per digit
        order = torch.arange(len(c)).view(len(digits), args.per_digit).T.reshape(-1)
        samples, frames, labels, nrow = samples[order], frames[:, order], c[order], len(digits)
    else:
        samples, frames = model.sample(n=args.n, seed=args.seed)
        labels, nrow = torch.full((args.n,), -1), min(args.n, 10)
    write_atomic(args.out, _png_bytes(samples, nrow))
    print(f"grid: {args.out}")
    if args.gif is not None:
        write_atomic(args.gif, _gif_bytes(frames, nrow))
        print(f"gif: {args.gif}")
    if args.npz is not None:
        buffer = io.BytesIO()
        images = frames[-1].numpy()
        np.savez_compressed(buffer, images=images, labels=labels.numpy().astype(np.int64))
        write_atomic(args.npz, buffer.getvalue())
        print(f"npz: {args.npz}")


def cmd_sample(args: argparse.Namespace) -> int:
    from diffumnist.models import load
    from diffumnist.runtime import resolve_device

    _check_writable([args.out, args.gif, args.npz])
    digits = parse_digits(args.digits)
    model = load(args.checkpoint)
    if model.config.kind == "denoiser":
        raise ConfigError(f"{args.checkpoint} is a single-step denoiser; it cannot sample")
    model.to(resolve_device(args.device))
    write_samples(model, args, digits)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the class model for a few hundred steps, then write a grid and a GIF."""
    from diffumnist.models import load

    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    config = TrainConfig(kind="class", max_steps=args.steps, preview_every=0)
    trainer = Trainer(config, run_dir, args.data_dir)
    if (run_dir / CHECKPOINT_NAME).exists():
        trainer = Trainer.resume(run_dir, args.data_dir)
    model = load(trainer.run())
    sample_args = argparse.Namespace(
        per_digit=1,
        guidance_scale=5.0,
        seed=42,
        out=args.out / "grid.png",
        gif=args.out / "process.gif",
        npz=None,
    )
    write_samples(model, sample_args, list(range(10)))
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "demo": cmd_demo}


def _one_line(exc: Exception) -> str:
    """Messages from libraries (e.g. torchvision's downloader) may span lines; ours never do."""
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 training failure, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"diffumnist: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"diffumnist: training failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("diffumnist: interrupted; a training run resumes with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
