"""What each `diffumnist` command does, once cli.py has read and checked its arguments.

Apart from the parser so that a mistake in the arguments is reported before torch and the
models are imported; everything here may import them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from diffumnist.classifier import train_classifier
from diffumnist.config import ConfigError, TrainConfig
from diffumnist.distributed import check_gpus_for, process_group
from diffumnist.export import export_weights
from diffumnist.files import check_writable, grid_format, write_atomic
from diffumnist.flags import (
    CLASSIFIER_COMMANDS,
    TRAIN_FIELDS,
    parse_digits,
    sampling_config,
    sampling_flags,
)
from diffumnist.launcher import launch, launched_by_torchrun
from diffumnist.runtime import describe_precision, resolve_device, resolve_precision
from diffumnist.sampling import OWN_TWIN_GUIDANCE, PRESETS, SamplingConfig, StepInfo
from diffumnist.train import (
    CHECKPOINT_NAME,
    Trainer,
    TrainingError,
    check_batches_split,
    read_run_config,
)


def resolve_checkpoint(value: str | None, default: str = "class") -> Path:
    """A path, or the name of a shipped model; cli.check_arguments refused anything else."""
    from diffumnist.pretrained import PRETRAINED_NAMES, pretrained_path

    value = value or default
    if not Path(value).exists() and value in PRETRAINED_NAMES:
        return pretrained_path(value)
    return Path(value)


def _load_on_device(value: str | None, device_name: str):
    from diffumnist.models import load

    model = load(resolve_checkpoint(value))
    return model.to(resolve_device(device_name))


def _model_sampling(args: argparse.Namespace, model) -> SamplingConfig:
    """The sampling flags over the preset of `model`'s kind, the precision resolved for its
    device (a denoiser, which does not sample, reads only --precision from them)."""
    kind = model.config.kind if model.kind.samples else "class"
    config = sampling_config(args, kind)
    return config.replace(precision=resolve_precision(config.precision, model.device))


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
    if args.kind in CLASSIFIER_COMMANDS:  # the judge or the filter, not a diffusion model
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
        if trainer.folder.twin_path.exists():
            flags = sampling_flags({"guide": trainer.folder.twin_path,
                                    **OWN_TWIN_GUIDANCE[config.kind]})  # fmt: skip
            print(f"its weak twin: {trainer.folder.twin_path}; sample guided by it with: "
                  f"diffumnist sample {path} {flags}")  # fmt: skip
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    """`train classifier` (the judge) and `train filter`: --out names the weights file,
    --epochs and --seed apply (defaults: those the shipped files were trained with)."""
    extra = set(vars(args)) & TRAIN_FIELDS - {"kind", "epochs", "seed"}
    if extra or args.resume or args.nproc > 1:
        raise ConfigError(f"train {args.kind} takes only --out, --epochs, --seed and --data-dir")
    out = args.out or Path("runs") / f"{args.kind}.safetensors"
    check_writable([out])
    accuracy = train_classifier(
        out,
        args.data_dir,
        getattr(args, "epochs", None),
        getattr(args, "seed", None),
        CLASSIFIER_COMMANDS[args.kind],
    )
    print(f"test accuracy {accuracy:.4f}; weights: {out}")
    return 0


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[StepInfo], None]]:
    """A tqdm bar on stderr over the sampler's steps, shown when stderr is a terminal; a
    redraw of digits the filter could not read starts a new bar that says so."""
    bars: list[tqdm] = []

    def on_step(info: StepInfo) -> None:
        if info.step == 0:
            what = "sampling" if not info.draw else (
                f"redrawing {len(info.slots)} illegible digit(s), try {info.draw + 1}"
            )  # fmt: skip
            bars.append(tqdm(total=info.num_steps, desc=what, unit="step", disable=None,
                             file=sys.stderr))  # fmt: skip
        bars[-1].update()
        if info.step + 1 == info.num_steps:
            bars[-1].close()

    try:
        yield on_step
    finally:
        for bar in bars:
            bar.close()


def write_samples(
    model, config: SamplingConfig, digits: list[int], per_digit: int, n: int, scale: int,
    out: Path, gif: Path | None, npz: Path | None,
) -> None:  # fmt: skip
    """Sample and write the grid (one row per digit; the time model's in rows of ten), and
    the GIF and npz when asked; each file atomically."""
    # every step's frame only when a GIF is wanted: 10k samples x 300 frames would be 2.4 GB
    frame_every = 1 if gif else 10**9
    with _progress() as on_step:
        if model.kind.conditional:
            c = torch.tensor(digits).repeat_interleave(per_digit)
            samples, frames = model.generate(c, config, frame_every=frame_every, callback=on_step)
            labels, nrow = c, per_digit if per_digit > 1 else len(digits)
        else:
            samples, frames = model.generate(None, config, n=n, frame_every=frame_every,
                                             callback=on_step)  # fmt: skip
            labels, nrow = torch.full((n,), -1), min(n, 10)
    from diffumnist.viz import gif_bytes, grid_bytes

    write_atomic(out, grid_bytes(samples, nrow, scale, grid_format(out)))
    print(f"grid: {out}")
    if gif is not None:
        write_atomic(gif, gif_bytes(frames, nrow, scale))
        print(f"gif: {gif}")
    if npz is not None:
        from diffumnist.evaluate import save_npz

        write_atomic(npz, save_npz(frames[-1], labels))
        print(f"npz: {npz}")


def cmd_sample(args: argparse.Namespace) -> int:
    """The arguments were checked before the imports (cli.check_arguments); here the model's
    kind decides which of --digits/--per-digit and --n apply."""
    model = _load_on_device(args.checkpoint, args.device)
    if not model.kind.samples:
        raise ConfigError(f"{args.checkpoint} is a single-step denoiser; it cannot sample")
    config = _model_sampling(args, model)
    _check_counts_fit(args, model, config)
    config.check(model.diffusion.num_timesteps)
    print(describe_precision(model.device, getattr(args, "precision", "auto")))
    print(f"sampling: {config.describe(guided=_guided(model, config))}")
    digits = parse_digits(args.digits or "0-9")
    write_samples(model, config, digits, args.per_digit or 4, args.n or 16, args.scale, args.out,
                  args.gif, args.npz)  # fmt: skip
    return 0


def _guided(model, config: SamplingConfig) -> bool:
    """Whether γ does anything: the class model guides by its classes, any model by a guide."""
    return model.kind.conditional or config.guide is not None


def _check_counts_fit(args: argparse.Namespace, model, config: SamplingConfig) -> None:
    """Refuse flags the model would ignore: --digits/--per-digit need classes, --n none, and
    γ or its interval need classes or a guide."""
    given = {flag for flag in ("digits", "per_digit", "n") if getattr(args, flag) is not None}
    wrong = given - ({"digits", "per_digit"} if model.kind.conditional else {"n"})
    if wrong:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in sorted(wrong))
        takes = "--digits and --per-digit" if model.kind.conditional else "--n"
        raise ConfigError(f"{flags} does not apply to the {model.config.kind} model; it takes "
                          f"{takes}")  # fmt: skip
    ignored = [
        name for name in ("guidance_scale", "guidance_interval")
        if getattr(args, name, None) is not None
    ]  # fmt: skip
    if ignored and not _guided(model, config):
        raise ConfigError(
            f"--{ignored[0].replace('_', '-')} needs a guide for the {model.config.kind} "
            "model, which has no classes: add --guide weak (or --preset fast)", ignored[0],
        )  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a sample file, or the checkpoint's kind with the metrics that fit it."""
    import json

    from diffumnist import evaluate

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
    out = args.out / "grid.png"
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
    sampling = {kind: sampling_config(args, kind) for kind in PRESETS}
    sampling = {
        k: s.replace(precision=resolve_precision(s.precision, device)) for k, s in sampling.items()
    }
    for path in draw_all(args.out, args.runs, args.data_dir, sampling):
        print(path)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from diffumnist.app import serve

    serve(args.host, args.port, data_dir=args.data_dir)
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


def run_command(args: argparse.Namespace) -> int:
    """Run the command `args` names; a training failure is one line and exit code 1."""
    try:
        return COMMANDS[args.command](args)
    except TrainingError as exc:
        prefix = (
            f"diffumnist: rank {os.environ['RANK']}:" if launched_by_torchrun() else "diffumnist:"
        )
        print(f"{prefix} training failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
