"""The `diffumnist` command: thin wrappers over the library.

Every user mistake ends as one line on stderr and exit code 2; nothing already written is
overwritten unless the new file is complete (outputs are written atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from diffumnist.checkpoint import write_atomic
from diffumnist.config import (
    MODEL_KINDS,
    BatchNormMode,
    ConfigError,
    DeviceName,
    Precision,
    TrainConfig,
)
from diffumnist.distributed import (
    WorkerFailed,
    check_gpus_for,
    launch,
    launched_by_torchrun,
    process_group,
)
from diffumnist.runtime import resolve_device
from diffumnist.train import CHECKPOINT_NAME, Trainer, TrainingError, read_run_config

_FLAG_TYPES = {"int": int, "float": float}
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_FLAG_CHOICES = {
    "Precision": get_args(Precision),
    "DeviceName": get_args(DeviceName),
    "BatchNormMode": get_args(BatchNormMode),
}


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


def seed_int(text: str) -> int:
    """A seed in 0..2**32-1: torch takes up to 2**64-1, but eval derives per-batch seeds."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..4294967295, got {text!r}")
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
        elif field.name == "seed":
            kwargs["type"] = seed_int
        else:
            kwargs["type"] = _FLAG_TYPES[field.type.split(" ")[0]]
        parser.add_argument(flag, **kwargs)


def _add_sampling_flags(parser: argparse.ArgumentParser, seed: int) -> None:
    parser.add_argument("--guidance-scale", type=finite_float, default=5.0, help="CFG scale γ")
    parser.add_argument("--seed", type=seed_int, default=seed, help="seed of the initial noise")
    parser.add_argument("--sampler", default="ddpm", help="ddpm (the recipe), ddim or dpmpp")
    parser.add_argument("--steps", type=positive_int, help="sampler steps (default: all T)")
    parser.add_argument("--eta", type=finite_float, default=0.0, help="DDIM noise (0 = none)")
    parser.add_argument("--device", choices=get_args(DeviceName), default="auto")
    parser.add_argument(
        "--precision", choices=get_args(Precision), default="auto",
        help="auto = bf16 autocast where the hardware has it",
    )  # fmt: skip


def _add_nproc_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffumnist", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shipped = "a .safetensors checkpoint, or denoiser/time/class for the shipped models"

    train = commands.add_parser("train", help="train a model with the recipe's defaults")
    train.add_argument("kind", choices=(*MODEL_KINDS, "classifier"), help="which model to train")
    train.add_argument("--out", type=Path, help="run folder (default runs/KIND)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    _add_nproc_flag(train, "data-parallel training on N processes (or start it with torchrun)")
    _add_train_flags(train)

    sample = commands.add_parser("sample", help="generate digits (default: the shipped model)")
    sample.add_argument("checkpoint", nargs="?", default="class", help=shipped)
    sample.add_argument("--digits", default="0-9", help="class model: digits, e.g. 0-9 or 1,3")
    sample.add_argument("--per-digit", type=positive_int, default=4, help="samples per digit")
    sample.add_argument("--n", type=positive_int, default=16, help="time model: samples")
    _add_sampling_flags(sample, seed=42)
    sample.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG")
    sample.add_argument("--gif", type=Path, help="also write the sampling process as a GIF")
    sample.add_argument("--npz", type=Path, help="also write images/labels as .npz")

    evaluate = commands.add_parser(
        "eval", help="measure a model or a sample file",
        description="Score a checkpoint (generating --n samples) or an existing --samples "
        "file with the shipped MNIST judge. Time on the project's 2-core AMX CPU (bf16, "
        "guidance, benchmarks/sampling.py): about 160 s per 100 samples with the recipe's "
        "300-step sampler, so 10k take about 4.5 hours; --sampler dpmpp --steps 20 takes "
        "about 10 s per 100, 10k in about 17 minutes. A GPU takes seconds.",
    )  # fmt: skip
    evaluate.add_argument("checkpoint", nargs="?", help=shipped)
    evaluate.add_argument("--samples", type=Path, help="score this .npz instead of generating")
    evaluate.add_argument("--n", type=positive_int, default=10_000, help="samples to generate")
    evaluate.add_argument("--batch-size", type=positive_int, default=500)
    _add_sampling_flags(evaluate, seed=0)
    evaluate.add_argument("--json", type=Path, help="also write the results as JSON")
    evaluate.add_argument("--npz", type=Path, help="also write the generated samples as .npz")
    _add_nproc_flag(evaluate, "generate on N processes, each a share of the batches")
    evaluate.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")

    demo = commands.add_parser("demo", help="offline demo: all ten digits from the shipped model")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    demo.add_argument("--seed", type=seed_int, default=42, help="seed of the initial noise")

    figures = commands.add_parser("figures", help="draw every figure of the recipe")
    figures.add_argument("--out", type=Path, default=Path("docs"), help="output folder")
    figures.add_argument("--runs", type=Path, default=Path("training"), help="run folders")
    figures.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    figures.add_argument("--sampler", default="ddpm", help="ddpm (the recipe), ddim or dpmpp")
    figures.add_argument("--steps", type=positive_int, help="sampler steps (default: all T)")
    figures.add_argument("--eta", type=finite_float, default=0.0, help="DDIM noise (0 = none)")

    ui = commands.add_parser("ui", help="serve the interactive page")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    ui.add_argument("--port", type=int, default=7860, help="port to listen on")
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
    for path in paths:
        if path is None:
            continue
        folder = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ConfigError(f"output {path} is a folder; give a file name")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write {path}: folder {folder} is missing or read-only")


def resolve_checkpoint(value: str | None, default: str = "class") -> Path:
    """A path, or the name of a shipped model (denoiser, time, class) when no such file exists."""
    from diffumnist.pretrained import pretrained_path

    value = value or default
    if not Path(value).exists() and value in MODEL_KINDS:
        return pretrained_path(value)
    return Path(value)


def _load_on_device(value: str | None, device_name: str):
    from diffumnist.models import load

    model = load(resolve_checkpoint(value))
    return model.to(resolve_device(device_name))


def _sampling_kwargs(args: argparse.Namespace, model) -> dict:
    from diffumnist.runtime import resolve_precision

    return {
        "guidance_scale": args.guidance_scale,
        "sampler": args.sampler,
        "steps": args.steps,
        "eta": args.eta,
        "precision": resolve_precision(args.precision, model.device),
    }


def _launches_ranks(
    args: argparse.Namespace, device_name: str, preflight: Callable[[], object]
) -> bool:
    """`--nproc N` outside torchrun: check the command once here (so a mistake is reported
    once, before any process starts), run it as N ranks through torchrun's launcher and
    wait; True when it did. Under torchrun, --nproc may only repeat torchrun's count."""
    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        if args.nproc not in (1, world_size):
            raise ConfigError(f"--nproc {args.nproc} disagrees with torchrun's {world_size} ranks")
        return False
    if args.nproc == 1:
        return False
    if resolve_device(device_name).type == "cuda":
        check_gpus_for(args.nproc)
    preflight()
    launch(args.nproc, args.argv)
    return True


def _train_config(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's configuration (from the flags, or its config.json with --resume) and folder."""
    overrides = {k: v for k, v in vars(args).items() if k in _TRAIN_FIELDS and k != "kind"}
    run_dir = args.out or Path("runs") / args.kind
    if args.resume:
        if overrides:
            flags = ", ".join("--" + k.replace("_", "-") for k in overrides)
            raise ConfigError(
                f"--resume takes its settings from the run's config.json; drop {flags}"
            )
        return read_run_config(run_dir), run_dir
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume or another --out")
    return TrainConfig(kind=args.kind, **overrides), run_dir


def cmd_train(args: argparse.Namespace) -> int:
    if args.kind == "classifier":
        return _train_classifier(args)
    config, run_dir = _train_config(args)

    def preflight() -> None:
        Trainer(config, run_dir, args.data_dir).check_batches_split(args.nproc)

    if _launches_ranks(args, config.device, preflight):
        return 0
    with process_group(config.device) as world:
        path = Trainer(config, run_dir, args.data_dir).run()
    if world.is_main:
        print(f"checkpoint: {path}")
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    """`train classifier`: the judge; --out names the weights file, --epochs and --seed apply."""
    from diffumnist.classifier import train_classifier

    extra = set(vars(args)) & _TRAIN_FIELDS - {"kind", "epochs", "seed"}
    if extra or args.resume or args.nproc > 1:
        raise ConfigError("train classifier takes only --out, --epochs, --seed and --data-dir")
    out = args.out or Path("runs") / "classifier.safetensors"
    _check_writable([out])
    accuracy = train_classifier(
        out, args.data_dir, getattr(args, "epochs", 6), getattr(args, "seed", 0)
    )
    print(f"test accuracy {accuracy:.4f}; weights: {out}")
    return 0


def write_samples(model, args: argparse.Namespace, digits: list[int] | None) -> None:
    """Sample with `model` and write the grid (and GIF / npz) atomically."""
    # every step's frame only when a GIF is wanted: 10k samples x 300 frames would be 2.4 GB
    kwargs = {**_sampling_kwargs(args, model), "frame_every": 1 if args.gif else 10**9}
    if model.config.kind == "class":
        c = torch.tensor(digits).repeat_interleave(args.per_digit)
        samples, frames = model.sample(c, seed=args.seed, **kwargs)
        # one row per repetition, one column per digit
        order = torch.arange(len(c)).view(len(digits), args.per_digit).T.reshape(-1)
        samples, frames, labels, nrow = samples[order], frames[:, order], c[order], len(digits)
    else:
        samples, frames = model.sample(n=args.n, seed=args.seed, **kwargs)
        labels, nrow = torch.full((args.n,), -1), min(args.n, 10)
    write_atomic(args.out, _png_bytes(samples, nrow))
    print(f"grid: {args.out}")
    if args.gif is not None:
        write_atomic(args.gif, _gif_bytes(frames, nrow))
        print(f"gif: {args.gif}")
    if args.npz is not None:
        from diffumnist.evaluate import save_npz

        write_atomic(args.npz, save_npz(frames[-1], labels))
        print(f"npz: {args.npz}")


def cmd_sample(args: argparse.Namespace) -> int:
    _check_writable([args.out, args.gif, args.npz])
    digits = parse_digits(args.digits)
    model = _load_on_device(args.checkpoint, args.device)
    if model.config.kind == "denoiser":
        raise ConfigError(f"{args.checkpoint} is a single-step denoiser; it cannot sample")
    write_samples(model, args, digits)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a sample file, or the checkpoint's kind with the metrics that fit it."""
    import json

    from diffumnist import evaluate

    _check_writable([args.json, args.npz])
    if (args.samples is None) == (args.checkpoint is None):
        raise ConfigError("give a checkpoint (or denoiser/time/class) or --samples FILE.npz")
    if args.samples is not None:
        if args.nproc > 1 or launched_by_torchrun():
            raise ConfigError("--nproc splits sample generation; scoring --samples needs one")
        results = evaluate.score_samples(*evaluate.load_npz(args.samples), args.data_dir, args.seed)
        print(evaluate.format_scores(results))
    else:
        if _launches_ranks(args, args.device, preflight=lambda: _eval_model(args)):
            return 0
        with process_group(args.device) as world:
            model = _eval_model(args)
            if model.config.kind == "denoiser":
                results = _denoiser_robustness(model, args)
            else:
                kwargs = _sampling_kwargs(args, model)
                images, labels = evaluate.generate(
                    model, args.n, seed=args.seed, batch_size=args.batch_size, world=world,
                    **kwargs,
                )  # fmt: skip
        if not world.is_main:
            return 0
        if model.config.kind != "denoiser":
            if args.npz is not None:
                write_atomic(args.npz, evaluate.save_npz(images, labels))
                print(f"npz: {args.npz}")
            results = {"settings": {**kwargs, "n": args.n, "seed": args.seed}}
            results.update(evaluate.score_samples(images, labels, args.data_dir, args.seed))
            print(evaluate.format_scores(results))
    if args.json is not None:
        write_atomic(args.json, json.dumps(results, indent=2).encode())
        print(f"json: {args.json}")
    return 0


def _eval_model(args: argparse.Namespace):
    """The checkpoint to evaluate, on its device, checked against the other flags."""
    model = _load_on_device(args.checkpoint, args.device)
    if model.config.kind == "denoiser" and (args.nproc > 1 or launched_by_torchrun()):
        raise ConfigError("the denoiser's robustness table runs on one process; drop --nproc")
    if model.config.kind == "denoiser" and args.npz is not None:
        raise ConfigError("--npz holds generated samples; a denoiser generates none")
    return model


def _denoiser_robustness(model, args: argparse.Namespace) -> dict:
    from diffumnist import evaluate
    from diffumnist.runtime import resolve_precision

    precision = resolve_precision(args.precision, next(model.net.parameters()).device)
    rows = evaluate.denoiser_robustness(
        model, args.data_dir, args.seed, limit=args.n, precision=precision
    )
    print(evaluate.format_robustness(rows))
    return {"robustness": rows}


def cmd_demo(args: argparse.Namespace) -> int:
    """All ten digits from the shipped class model: a grid and a GIF, offline, on any CPU."""
    args.out.mkdir(parents=True, exist_ok=True)
    sample_args = argparse.Namespace(
        per_digit=1, guidance_scale=5.0, seed=args.seed, sampler="ddpm", steps=None, eta=0.0,
        precision="auto", out=args.out / "grid.png", gif=args.out / "process.gif", npz=None,
    )  # fmt: skip
    _check_writable([sample_args.out])
    write_samples(_load_on_device("class", "auto"), sample_args, list(range(10)))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from diffumnist.figures import draw_all

    sampling = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta}
    for path in draw_all(args.out, args.runs, args.data_dir, sampling):
        print(path)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from diffumnist.app import serve

    serve(args.host, args.port)
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "demo": cmd_demo,
    "figures": cmd_figures,
    "ui": cmd_ui,
}


def _one_line(exc: Exception) -> str:
    """Messages from libraries (e.g. torchvision's downloader) may span lines; ours never do."""
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 training failure, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # a rank of a distributed run names itself, since every rank may report the same mistake
    prefix = f"diffumnist: rank {os.environ['RANK']}:" if launched_by_torchrun() else "diffumnist:"
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"{prefix} error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"{prefix} training failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    except WorkerFailed as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return max(exc.exit_code, 1)  # negative: the rank was killed by a signal
    except KeyboardInterrupt:  # said once, by the launcher when there are ranks
        if not launched_by_torchrun():
            print("diffumnist: interrupted; a training run resumes with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
