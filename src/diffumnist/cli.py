"""The `diffumnist` command: train, sample, measure, draw and watch DDPM models on MNIST.

Every user mistake ends as one line on stderr and exit code 2, before any work: the
arguments are read and checked here, where nothing imports torch, and only then does
commands.py run the command. Nothing already written is overwritten unless the new file is
complete (outputs are written atomically). Flags come from the settings' declarations
(TrainConfig, SamplingConfig), so a default and its help text are written once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from diffumnist.config import KIND_NAMES, ConfigError, DeviceName
from diffumnist.files import IMAGE_FORMATS, check_writable, grid_format
from diffumnist.flags import (
    CLASSIFIER_COMMANDS,
    DEVICE_HELP,
    HelpFormatter,
    Parser,
    add_nproc_flag,
    add_sampling_flags,
    add_train_flags,
    count_int,
    parse_digits,
    port_int,
    seed_int,
    version_text,
)
from diffumnist.launcher import WorkerFailed, launched_by_torchrun
from diffumnist.pretrained import PRETRAINED_NAMES, SAMPLING_MODELS
from diffumnist.sampling.limits import MAX_SAMPLES_PER_CALL

MAX_SCALE = 32  # grid pixels per pixel: 10k digits at 32x would be gigapixels already
MAX_EVAL_SAMPLES = 1_000_000
MAX_REMEASURE_BATCHES = 100_000


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="diffumnist", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    shipped = "a .safetensors checkpoint, or {} for the shipped models"
    add = lambda name, help_text, **kw: commands.add_parser(  # noqa: E731
        name, help=help_text, description=kw.pop("description", help_text),
        formatter_class=HelpFormatter, **kw,
    )  # fmt: skip

    train = add("train", "train a model with the recipe's defaults")
    train.add_argument("kind", choices=(*KIND_NAMES, *CLASSIFIER_COMMANDS),
                       help="which model to train (classifier: the judge; filter: the reader "
                       "of reject_below)")  # fmt: skip
    train.add_argument("--out", type=Path, help="run folder (default runs/KIND)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out; with --epochs N, train a finished run on to N epochs "
        "(its learning rate decaying on at the same rate per epoch)",
    )
    train.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    add_nproc_flag(train, "data-parallel training on N processes (or start it with torchrun)")
    add_train_flags(train)

    sample = add("sample", "generate digits (default: the shipped class model, --preset fast)")
    sample.add_argument("checkpoint", nargs="?", default="class",
                        help=shipped.format("/".join(SAMPLING_MODELS)))  # fmt: skip
    sample.add_argument("--digits", help="class model: digits, e.g. 0-9 or 1,3 (default: 0-9)")
    sample.add_argument(
        "--per-digit",
        type=count_int(MAX_SAMPLES_PER_CALL),
        help="class model: samples per digit (default: 4)",
    )
    sample.add_argument(
        "--n", type=count_int(MAX_SAMPLES_PER_CALL), help="time model: samples (default: 16)"
    )
    sample.add_argument("--out", type=Path, default=Path("samples.png"),
                        help="grid image, one row per digit; format from the name: "
                        + ", ".join(IMAGE_FORMATS))  # fmt: skip
    sample.add_argument(
        "--scale", type=count_int(MAX_SCALE), default=2, help="grid pixels per pixel"
    )
    sample.add_argument("--gif", type=Path, help="also write the sampling process as a .gif")
    sample.add_argument("--npz", type=Path, help="also write images/labels as .npz (for eval)")
    sample.add_argument("--device", choices=get_args(DeviceName), default="auto", help=DEVICE_HELP)
    add_sampling_flags(sample, seed=42, preset="fast")

    evaluate = add(
        "eval", "measure a model or a sample file",
        description="Score a checkpoint (generating --n samples) or an existing --samples "
        "file with the shipped MNIST judge: MNIST-FID, precision, recall and, for the class "
        "model, how often the judge reads the requested digit. On a 2-core laptop CPU the "
        "recipe's 300-step sampler takes hours for 10,000 samples, --preset fast about 20 "
        "minutes; a GPU takes seconds (docs/speed.md).",
    )  # fmt: skip
    evaluate.add_argument("checkpoint", nargs="?", help=shipped.format("/".join(PRETRAINED_NAMES)))
    evaluate.add_argument("--samples", type=Path, help="score this .npz instead of generating")
    evaluate.add_argument(
        "--n", type=count_int(MAX_EVAL_SAMPLES), default=10_000, help="samples to generate"
    )
    evaluate.add_argument(
        "--batch-size", type=count_int(MAX_SAMPLES_PER_CALL), default=500, help="per model call"
    )
    evaluate.add_argument("--json", type=Path, help="also write the results as JSON")
    evaluate.add_argument("--npz", type=Path, help="also write the generated samples as .npz")
    add_nproc_flag(evaluate, "generate on N processes, each a share of the batches")
    evaluate.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    evaluate.add_argument(
        "--device", choices=get_args(DeviceName), default="auto", help=DEVICE_HELP
    )
    add_sampling_flags(evaluate, seed=0)

    export = add(
        "export", "write a weights-only file for sampling or shipping",
        description="Write a checkpoint's EMA (or raw) weights without the optimizer and RNG "
        "state, optionally in fp16 (as the shipped files are) and with the BatchNorm "
        "statistics measured afresh for those weights (the EMA copy's stored statistics "
        "were measured on other weights; MODEL_CARD.md measures the difference).",
    )  # fmt: skip
    export.add_argument("checkpoint", help=shipped.format("/".join(SAMPLING_MODELS)))
    export.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    export.add_argument("--raw", action="store_true", help="the raw weights, not the EMA copy")
    export.add_argument("--fp16", action="store_true", help="store floats in fp16 (half the size)")
    export.add_argument(
        "--remeasure-bn", type=count_int(MAX_REMEASURE_BATCHES), metavar="BATCHES",
        help="measure BatchNorm statistics afresh on BATCHES random training batches "
        "(100 take a few minutes on a laptop CPU)",
    )  # fmt: skip
    export.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")

    demo = add("demo", "offline demo: all ten digits from the shipped model")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    demo.add_argument("--seed", type=seed_int, default=42, help="seed of the initial noise")

    figures = add("figures", "draw every figure of the recipe (fixed seeds)")
    figures.add_argument("--out", type=Path, default=Path("docs"), help="output folder")
    figures.add_argument("--runs", type=Path, default=Path("training"), help="run folders")
    figures.add_argument("--data-dir", type=Path, help="MNIST folder (default $DIFFUMNIST_DATA)")
    add_sampling_flags(figures)

    ui = add("ui", "serve the interactive page")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    ui.add_argument("--port", type=port_int, default=7860, help="port to listen on (1-65535)")
    ui.add_argument(
        "--data-dir",
        type=Path,
        help="MNIST folder for the denoiser tab's test digits (default "
        "$DIFFUMNIST_DATA, else ~/.cache/diffumnist); the page never downloads",
    )
    return parser


def _checkpoint_exists(value: str | None) -> None:
    """A checkpoint argument must be a file or the name of a shipped model."""
    if value is not None and value not in PRETRAINED_NAMES and not Path(value).is_file():
        raise ConfigError(f"no checkpoint {value!r}: give a .safetensors file or a shipped "
                          f"model ({', '.join(PRETRAINED_NAMES)})")  # fmt: skip


def _ending(path: Path | None, flag: str, endings: tuple[str, ...]) -> None:
    if path is not None and path.suffix.lower() not in endings:
        raise ConfigError(f"{flag} {path}: the name must end in {' or '.join(endings)}")


def check_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no model: names, endings, writable outputs, digits. A check
    that needs the model's kind or T follows its loading (commands.py), still before work."""
    if args.command in ("sample", "eval", "export"):
        _checkpoint_exists(args.checkpoint)
    if args.command == "sample":
        grid_format(args.out)
        _ending(args.gif, "--gif", (".gif",))
        _ending(args.npz, "--npz", (".npz",))
        parse_digits(args.digits or "0-9")
        check_writable([args.out, args.gif, args.npz])
    elif args.command == "eval":
        _ending(args.npz, "--npz", (".npz",))
        _ending(args.json, "--json", (".json",))
        check_writable([args.json, args.npz])
    elif args.command == "export":
        _ending(args.out, "--out", (".safetensors",))
        check_writable([args.out])
    elif args.command == "demo":
        args.out.mkdir(parents=True, exist_ok=True)
        check_writable([args.out / "grid.png"])


def _one_line(exc: Exception) -> str:
    """Messages from libraries (e.g. torchvision's downloader) may span lines; ours never do."""
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 training failure, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # a rank of a distributed run names itself, since every rank may report the same mistake
    prefix = f"diffumnist: rank {os.environ['RANK']}:" if launched_by_torchrun() else "diffumnist:"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `diffumnist`: show what it can do
            parser.print_help()
            return 2
        args.argv = argv
        check_arguments(args)
        from diffumnist.commands import run_command  # the heavy imports, after the checks

        return run_command(args)
    except ConfigError as exc:
        print(f"{prefix} error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return max(exc.exit_code, 1)  # negative: the rank was killed by a signal
    except KeyboardInterrupt:  # said once, by the launcher when there are ranks
        if not launched_by_torchrun():
            print("diffumnist: interrupted; a training run resumes with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
