"""Quality per step of the samplers: the shipped class model at γ = 5, sampler × steps.

For every setting it generates --n guided digits (digit i % 10, the same seeds and hence the
same x_T for every setting) in batches of 100 and prints a Markdown table: seconds per 100
digits (after a warm-up), speed-up over ddpm at 300 steps, MNIST-FID beside its floor (real
training digits), and guided accuracy as judged by the shipped classifier. ddpm always runs
its T = 300 steps; ddim (η = 0) and dpmpp run each of --steps.

The grid runs in --precisions (default bf16 autocast); the --fp32-check settings run again
in fp32 on the same seeds, so the table shows what bf16 costs in quality there.

    python benchmarks/sampling.py [--n 1000] [--device auto] [--samplers ddpm,ddim,dpmpp]
        [--steps 10,20,50,100,300] [--precisions bf16] [--fp32-check dpmpp:20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import diffumnist
from diffumnist.config import ConfigError, check_choice
from diffumnist.evaluate import generate, score_samples
from diffumnist.models import DiffusionModel
from diffumnist.runtime import resolve_device
from diffumnist.sampling import SAMPLER_NAMES, check_sampler_args

BATCH = 100  # "seconds per 100 digits" is then the mean time of one batch


@dataclass(frozen=True)
class Setting:
    sampler: str
    steps: int
    precision: str


@dataclass(frozen=True)
class Row:
    setting: Setting
    seconds_per_100: float
    mnist_fid: float
    mnist_fid_floor: float
    guided_accuracy: float


def grid(args: argparse.Namespace, num_timesteps: int) -> list[Setting]:
    """The settings to measure, validated before any sampling starts."""
    settings = []
    for precision in args.precisions:
        for sampler in args.samplers:
            steps = [num_timesteps] if sampler == "ddpm" else args.steps
            settings += [Setting(sampler, s, precision) for s in steps if s <= num_timesteps]
    for check in args.fp32_check:
        sampler, _, steps = check.partition(":")
        if not steps.isdigit():
            raise ConfigError(f"--fp32-check takes sampler:steps, e.g. dpmpp:20; got {check!r}")
        settings.append(Setting(sampler, int(steps), "fp32"))
    settings = list(dict.fromkeys(settings))  # drop repeats, keep order
    for setting in settings:
        check_sampler_args(setting.sampler, setting.steps, 0.0, num_timesteps)
    return settings


def measure(model: DiffusionModel, setting: Setting, args: argparse.Namespace) -> Row:
    """Generate --n digits with one setting, timing the sampling, then score them."""
    kwargs = dict(
        guidance_scale=args.guidance_scale, precision=setting.precision, progress=False,
        sampler=setting.sampler, steps=setting.steps,
    )  # fmt: skip
    generate(model, 10, seed=args.seed + 1, **kwargs)  # warm-up: first-call kernel setup
    started = time.perf_counter()
    images, labels = generate(model, args.n, seed=args.seed, batch_size=BATCH, **kwargs)
    seconds = time.perf_counter() - started
    scores = score_samples(images, labels, args.data_dir, seed=args.seed)
    return Row(
        setting, seconds * BATCH / args.n, scores["mnist_fid"], scores["mnist_fid_floor"],
        scores["guided_accuracy"]["overall"],
    )  # fmt: skip


def table(rows: list[Row]) -> str:
    """The README's Markdown table; speed-up is relative to ddpm 300 at the same precision."""
    baseline = {r.setting.precision: r.seconds_per_100 for r in rows if r.setting.sampler == "ddpm"}
    lines = [
        "| sampler | steps | precision | s / 100 digits | speed-up | MNIST-FID (floor) "
        "| guided accuracy |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = baseline.get(r.setting.precision)
        speedup = f"{base / r.seconds_per_100:.1f}x" if base else "-"
        lines.append(
            f"| {r.setting.sampler} | {r.setting.steps} | {r.setting.precision} "
            f"| {r.seconds_per_100:.2f} | {speedup} | {r.mnist_fid:.3f} ({r.mnist_fid_floor:.3f}) "
            f"| {r.guided_accuracy:.4f} |"
        )
    return "\n".join(lines)


def precision_deltas(rows: list[Row]) -> list[str]:
    """bf16 − fp32 for each setting measured in both (same seeds, so the pair is matched)."""
    by_key = {(r.setting.sampler, r.setting.steps, r.setting.precision): r for r in rows}
    lines = []
    for (sampler, steps, precision), bf16 in by_key.items():
        fp32 = by_key.get((sampler, steps, "fp32"))
        if precision == "bf16" and fp32 is not None:
            lines.append(
                f"{sampler} {steps}: bf16 - fp32 MNIST-FID {bf16.mnist_fid - fp32.mnist_fid:+.3f}, "
                f"guided accuracy {bf16.guided_accuracy - fp32.guided_accuracy:+.4f}, "
                f"time x{bf16.seconds_per_100 / fp32.seconds_per_100:.2f}"
            )
    return lines


def comma_list(kind: type) -> Callable[[str], list]:
    """An argparse type for comma-separated values."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="digits per setting (>= 10)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--samplers", type=comma_list(str), default=list(SAMPLER_NAMES), help="comma-separated"
    )
    parser.add_argument(
        "--steps", type=comma_list(int), default=[10, 20, 50, 100, 300],
        help="steps for ddim and dpmpp, comma-separated (ddpm always takes T)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", type=comma_list(str), default=["bf16"], help="fp32 and/or bf16"
    )
    parser.add_argument(
        "--fp32-check", type=comma_list(str), default=["dpmpp:20"],
        help="sampler:steps settings also run in fp32 ('' for none)",
    )  # fmt: skip
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args()


def main() -> None:
    try:
        run(parse_args())
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None


def run(args: argparse.Namespace) -> None:
    """Measure every setting, then print the table and the bf16 − fp32 differences."""
    for precision in args.precisions:
        check_choice("precision", precision, ("fp32", "bf16"))
    if args.n < 10:
        raise ConfigError(f"--n must be >= 10 to score; got {args.n}")
    device = resolve_device(args.device)
    model = diffumnist.load_pretrained("class").to(device)
    settings = grid(args, model.config.num_timesteps)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"n = {args.n} digits per setting, guidance scale {args.guidance_scale}")  # fmt: skip
    rows = []
    for setting in settings:
        rows.append(measure(model, setting, args))
        print(f"  done: {setting} {rows[-1].seconds_per_100:.2f} s / 100", flush=True)
    print(table(rows))
    print("\n".join(precision_deltas(rows)))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
