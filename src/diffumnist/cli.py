"""The `diffumnist` command: train, sample, measure, draw and watch DDPM models on MNIST.

Every user mistake ends as one line on stderr and exit code 2; nothing already written is
overwritten unless the new file is complete (outputs are written atomically). Flags are
generated from the dataclasses that own the settings (TrainConfig, SamplingConfig), so a
default and its help text are written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import torch

from diffumnist.classifier import ROLES, train_classifier
from diffumnist.config import ConfigError, DeviceName, TrainConfig
from diffumnist.distributed import check_gpus_for, launched_by_torchrun, process_group
from diffumnist.export import REMEASURE_BATCH_SIZE, export_weights
from diffumnist.files import write_atomic
from diffumnist.flags import (
    DEVICE_HELP,
    TRAIN_FIELDS,
    HelpFormatter,
    Parser,
    add_nproc_flag,
    add_sampling_flags,
    add_train_flags,
    parse_digits,
    positive_int,
    sampling_config,
    seed_int,
    version_text,
)
from diffumnist.kinds import KIND_NAMES
from diffumnist.launcher import WorkerFailed, launch
from diffumnist.pretrained import PRETRAINED_NAMES, SAMPLING_MODELS, pretrained_path
from diffumnist.runtime import describe_precision, resolve_device, resolve_precision
from diffumnist.sampling import PRESETS, SamplingConfig
from diffumnist.train import (
    CHECKPOINT_NAME,
    Trainer,
    TrainingError,
    check_batches_split,
    read_run_config,
)
from diffumnist.viz import IMAGE_FORMATS

# `train NAME` for the two classifiers, named as their shipped files: the role each trains.
CLASSIFIER_ROLES = {role.shipped: name for name, role in ROLES.items()}


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
    train.add_argument("kind", choices=(*KIND_NAMES, *CLASSIFIER_ROLES),
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

    sample = add("sample", "generate digits (default: the shipped class model)")
    sample.add_argument("checkpoint", nargs="?", default="class",
                        help=shipped.format("/".join(SAMPLING_MODELS)))  # fmt: skip
    sample.add_argument("--digits", default="0-9", help="class model: digits, e.g. 0-9 or 1,3")
    sample.add_argument("--per-digit", type=positive_int, default=4, help="samples per digit")
    sample.add_argument("--n", type=positive_int, default=16, help="time model: samples")
    sample.add_argument("--out", type=Path, default=Path("samples.png"),
                        help="grid image, one row per digit; format from the name: "
                        + ", ".join(IMAGE_FORMATS))  # fmt: skip
    sample.add_argument("--scale", type=positive_int, default=2, help="grid pixels per pixel")
    sample.add_argument("--gif", type=Path, help="also write the sampling process as a .gif")
    sample.add_argument("--npz", type=Path, help="also write images/labels as .npz")
    sample.add_argument("--device", choices=get_args(DeviceName), default="auto", help=DEVICE_HELP)
    add_sampling_flags(sample, seed=42, preset="fast")

    evaluate = add(
        "eval", "measure a model or a sample file",
        description="Score a checkpoint (generating --n samples) or an existing --samples "
        "file with the shipped MNIST judge. Time on the project's 2-core AMX CPU (bf16, "
        "guidance, benchmarks/sampling.py): about 160 s per 100 samples with the recipe's "
        "300-step sampler, so 10k take about 4.5 hours; --sampler dpmpp --steps 20 takes "
        "about 10 s per 100, 10k in about 17 minutes. A GPU takes seconds.",
    )  # fmt: skip
    evaluate.add_argument("checkpoint", nargs="?", help=shipped.format("/".join(PRETRAINED_NAMES)))
    evaluate.add_argument("--samples", type=Path, help="score this .npz instead of generating")
    evaluate.add_argument("--n", type=positive_int, default=10_000, help="samples to generate")
    evaluate.add_argument("--batch-size", type=positive_int, default=500, help="per model call")
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
        "--remeasure-bn", type=positive_int, metavar="BATCHES",
        help="measure BatchNorm statistics afresh on BATCHES random training batches of "
        f"{REMEASURE_BATCH_SIZE} (100 took 280 s on a 2-core AMD EPYC CPU)",
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
    ui.add_argument("--port", type=int, default=7860, help="port to listen on")
    return parser


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
    """A path, or the name of a shipped model (PRETRAINED_NAMES) when no such file exists."""
    value = value or default
    if not Path(value).exists() and value in PRETRAINED_NAMES:
        return pretrained_path(value)
    return Path(value)


def _load_on_device(value: str | None, device_name: str):
    from diffumnist.models import load

    model = load(resolve_checkpoint(value))
    return model.to(resolve_device(device_name))


def _model_sampling(args: argparse.Namespace, model) -> SamplingConfig:
    """The sampling flags over the preset of `model`'s kind (a denoiser, which does not
    sample, reads only --precision from them)."""
    kind = model.config.kind if model.kind.samples else "class"
    return sampling_config(args, model.device, kind)


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
    overrides = {k: v for k, v in vars(args).items() if k in TRAIN_FIELDS and k != "kind"}
    run_dir = args.out or Path("runs") / args.kind
    if args.resume:
        epochs = overrides.pop("epochs", None)
        if overrides:
            flags = ", ".join("--" + k.replace("_", "-") for k in overrides)
            raise ConfigError(
                f"--resume takes its settings from the run's config.json; drop {flags}"
            )
        config = read_run_config(run_dir)
        if epochs is not None and epochs < config.epochs:
            raise ConfigError(
                f"--epochs {epochs} with --resume can only extend the run; it has {config.epochs}"
            )
        # more epochs: the checkpoint's LR decays on at the run's rate (RunFolder.open)
        return dataclasses.replace(config, epochs=epochs or config.epochs), run_dir
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume or another --out")
    return TrainConfig(kind=args.kind, **overrides), run_dir


def cmd_train(args: argparse.Namespace) -> int:
    if args.kind in CLASSIFIER_ROLES:  # the judge or the filter, not a diffusion model
        return _train_classifier(args)
    config, run_dir = _train_config(args)

    def preflight() -> None:
        trainer = Trainer(config, run_dir, args.data_dir)  # validates the whole configuration
        check_batches_split(trainer.config, args.data_dir, args.nproc)

    if _launches_ranks(args, config.device, preflight):
        return 0
    with process_group(config.device) as world:
        trainer = Trainer(config, run_dir, args.data_dir)
        if world.is_main:
            print(describe_precision(trainer.device, trainer.config.precision))
        path = trainer.run()
    if world.is_main:
        print(f"checkpoint: {path}")
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    """`train classifier` (the judge) and `train filter`: --out names the weights file,
    --epochs and --seed apply (defaults: those the shipped files were trained with)."""
    extra = set(vars(args)) & TRAIN_FIELDS - {"kind", "epochs", "seed"}
    if extra or args.resume or args.nproc > 1:
        raise ConfigError(f"train {args.kind} takes only --out, --epochs, --seed and --data-dir")
    out = args.out or Path("runs") / f"{args.kind}.safetensors"
    _check_writable([out])
    accuracy = train_classifier(
        out,
        args.data_dir,
        getattr(args, "epochs", None),
        getattr(args, "seed", None),
        CLASSIFIER_ROLES[args.kind],
    )
    print(f"test accuracy {accuracy:.4f}; weights: {out}")
    return 0


def _grid_format(path: Path) -> str:
    """The image format `path`'s ending asks for; a ConfigError for endings we cannot write."""
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ConfigError(
            f"--out {path}: the name must end in one of {', '.join(IMAGE_FORMATS)} "
            "(the format is taken from it)"
        )
    return image_format


def write_samples(
    model, config: SamplingConfig, digits: list[int], per_digit: int, n: int, scale: int,
    out: Path, gif: Path | None, npz: Path | None,
) -> None:  # fmt: skip
    """Sample and write the grid (one row per digit; the time model's in rows of ten), and
    the GIF and npz when asked; each file atomically."""
    # every step's frame only when a GIF is wanted: 10k samples x 300 frames would be 2.4 GB
    frame_every = 1 if gif else 10**9
    if model.kind.conditional:
        c = torch.tensor(digits).repeat_interleave(per_digit)
        samples, frames = model.generate(c, config, frame_every=frame_every)
        labels, nrow = c, per_digit if per_digit > 1 else len(digits)
    else:
        samples, frames = model.generate(None, config, n=n, frame_every=frame_every)
        labels, nrow = torch.full((n,), -1), min(n, 10)
    from diffumnist.viz import gif_bytes, grid_bytes

    write_atomic(out, grid_bytes(samples, nrow, scale, _grid_format(out)))
    print(f"grid: {out}")
    if gif is not None:
        write_atomic(gif, gif_bytes(frames, nrow, scale))
        print(f"gif: {gif}")
    if npz is not None:
        from diffumnist.evaluate import save_npz

        write_atomic(npz, save_npz(frames[-1], labels))
        print(f"npz: {npz}")


def cmd_sample(args: argparse.Namespace) -> int:
    _grid_format(args.out)
    if args.gif is not None and args.gif.suffix.lower() != ".gif":
        raise ConfigError(f"--gif {args.gif}: the name must end in .gif")
    _check_writable([args.out, args.gif, args.npz])
    digits = parse_digits(args.digits)
    model = _load_on_device(args.checkpoint, args.device)
    if not model.kind.samples:
        raise ConfigError(f"{args.checkpoint} is a single-step denoiser; it cannot sample")
    config = _model_sampling(args, model)
    config.num_steps(model.diffusion.num_timesteps)
    print(describe_precision(model.device, getattr(args, "precision", "auto")))
    print(f"sampling: {config.describe(guided=model.kind.conditional)}")
    write_samples(model, config, digits, args.per_digit, args.n, args.scale, args.out,
                  args.gif, args.npz)  # fmt: skip
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
            config = _model_sampling(args, model)
            if not model.kind.samples:
                rows = evaluate.denoiser_robustness(
                    model, args.data_dir, args.seed, limit=args.n, precision=config.precision
                )
                results = {"robustness": rows}
            else:
                images, labels = evaluate.generate(
                    model, args.n, config, batch_size=args.batch_size, world=world
                )
        if not world.is_main:
            return 0
        if not model.kind.samples:
            print(evaluate.format_robustness(results["robustness"]))
        else:
            if args.npz is not None:
                write_atomic(args.npz, evaluate.save_npz(images, labels))
                print(f"npz: {args.npz}")
            results = {"settings": {**config.to_dict(), "n": args.n}}
            results.update(evaluate.score_samples(images, labels, args.data_dir, args.seed))
            print(evaluate.format_scores(results))
    if args.json is not None:
        write_atomic(args.json, json.dumps(results, indent=2).encode())
        print(f"json: {args.json}")
    return 0


def _eval_model(args: argparse.Namespace):
    """The checkpoint to evaluate, on its device, checked against the other flags."""
    model = _load_on_device(args.checkpoint, args.device)
    config = _model_sampling(args, model)
    if model.kind.samples:
        config.num_steps(model.diffusion.num_timesteps)
    elif args.nproc > 1 or launched_by_torchrun():
        raise ConfigError("the denoiser's robustness table runs on one process; drop --nproc")
    elif args.npz is not None:
        raise ConfigError("--npz holds generated samples; a denoiser generates none")
    return model


def cmd_export(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":
        raise ConfigError(f"--out {args.out}: the name must end in .safetensors")
    _check_writable([args.out])
    source = resolve_checkpoint(args.checkpoint)
    meta = export_weights(
        source, args.out, use_ema=not args.raw, half=args.fp16,
        remeasure_batches=args.remeasure_bn or 0, data_dir=args.data_dir,
    )  # fmt: skip
    weights = {True: "EMA weights", False: "raw weights"}.get(meta.get("ema"), "weights")
    remeasured = f", BatchNorm remeasured on {args.remeasure_bn} batches" * bool(args.remeasure_bn)
    print(f"wrote {args.out}: {weights} of {source}, {meta['storage']}{remeasured}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """All ten digits from the shipped class model: a grid and a GIF, offline, on any CPU."""
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "grid.png"
    _check_writable([out])
    model = _load_on_device("class", "auto")
    config = SamplingConfig(seed=args.seed).replace(
        precision=resolve_precision("auto", model.device)
    )
    print(f"sampling: {config.describe()}")
    write_samples(model, config, list(range(10)), 1, 0, 2, out, args.out / "process.gif", None)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from diffumnist.figures import draw_all

    device = resolve_device("auto")
    sampling = {kind: sampling_config(args, device, kind) for kind in PRESETS}
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
    "export": cmd_export,
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
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `diffumnist`: show what it can do
            parser.print_help()
            return 2
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
