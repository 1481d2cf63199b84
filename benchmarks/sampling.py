"""Speed and quality of sampling as users call it: the shipped class model at γ = 5.

For every setting (sampler × steps × precision) it generates --n guided digits (digit
i % 10, batch b seeded with --seed + b, so every setting starts from the same x_T) with
`model.sample`, in calls of 100 digits, and prints a Markdown table: seconds per 100
digits (best of --rounds; the settings alternate between rounds so drift in the machine's
speed hits all alike), speed-up over the first setting, achieved GFLOP/s of the network
and its fraction of the matmul peaks measured in the same run (benchmarks/roofline.py),
MNIST-FID beside its floor (real training digits) and guided accuracy by the shipped
classifier. Precision `default` calls model.sample without the argument (what a Python
user gets); the --fp32-check settings run again in fp32 on the same seeds, so the table
shows what bf16 costs in quality.

    python benchmarks/sampling.py [--n 100] [--samplers dpmpp] [--steps 20]
        [--precisions default,fp32] [--fp32-check dpmpp:20] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from roofline import Peaks, header, measure_peaks, unet_flops

import diffumnist
from diffumnist.config import ConfigError
from diffumnist.data import to_uint8
from diffumnist.evaluate import score_samples

BATCH = 100  # digits per model.sample call; "seconds per 100 digits" is one call's time
PRECISIONS = ("default", "auto", "fp32", "bf16")


@dataclass(frozen=True)
class Setting:
    sampler: str
    steps: int
    precision: str  # one of PRECISIONS; "default" leaves model.sample's default

    def kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"sampler": self.sampler, "steps": self.steps}
        if self.precision != "default":
            kwargs["precision"] = self.precision
        return kwargs


@dataclass(frozen=True)
class Row:
    setting: Setting
    seconds_per_100: float
    gflops: float
    mnist_fid: float
    mnist_fid_floor: float
    guided_accuracy: float


class ForwardCounter:
    """Counts images through every network of one type: FLOPs = images x FLOPs per image."""

    def __init__(self, net_type: type) -> None:
        self.images = 0
        self.net_type = net_type
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self.hook)

    def hook(self, module: torch.nn.Module, inputs: tuple) -> None:
        if type(module) is self.net_type:
            self.images += len(inputs[0])


def grid(args: argparse.Namespace) -> list[Setting]:
    """The settings to measure, in order, without repeats."""
    settings = []
    for precision in args.precisions:
        if precision not in PRECISIONS:
            raise ConfigError(f"precisions must be among {', '.join(PRECISIONS)}; got {precision}")
        for sampler in args.samplers:
            steps = [args.num_timesteps] if sampler == "ddpm" else args.steps
            settings += [Setting(sampler, s, precision) for s in steps]
    for check in args.fp32_check:
        sampler, _, steps = check.partition(":")
        if not steps.isdigit():
            raise ConfigError(f"--fp32-check takes sampler:steps, e.g. dpmpp:20; got {check!r}")
        settings.append(Setting(sampler, int(steps), "fp32"))
    return list(dict.fromkeys(settings))


def generate(model, setting: Setting, args: argparse.Namespace) -> tuple[torch.Tensor, float]:
    """--n digits with one setting: (uint8 images (n, 28, 28), seconds per 100 digits)."""
    digits = torch.arange(args.n) % 10
    images, seconds = [], 0.0
    for index, start in enumerate(range(0, args.n, BATCH)):
        started = time.perf_counter()
        samples, _ = model.sample(
            digits[start : start + BATCH], guidance_scale=args.guidance_scale,
            seed=args.seed + index, frame_every=10**9, **setting.kwargs(),
        )  # fmt: skip
        seconds += time.perf_counter() - started
        images.append(to_uint8(samples))
    return torch.cat(images), seconds * BATCH / args.n


def measure(model, settings: list[Setting], args: argparse.Namespace) -> tuple[list[Row], Peaks]:
    """Time every setting in alternating rounds (best round counts), then score each once."""
    gflop_per_image = unet_flops("class", model.config.hidden_dim).forward
    counter = ForwardCounter(type(model.net))
    for setting in settings:  # warm-up: first-call kernel setup
        model.sample([0, 1], seed=args.seed, frame_every=10**9, **setting.kwargs())
    peaks = measure_peaks()
    best: dict[Setting, tuple[float, float]] = {}
    images: dict[Setting, torch.Tensor] = {}
    for round_index in range(args.rounds):
        for setting in settings:
            counter.images = 0
            images[setting], seconds = generate(model, setting, args)
            gflops = counter.images * gflop_per_image / (seconds * args.n / BATCH)
            if setting not in best or seconds < best[setting][0]:
                best[setting] = (seconds, gflops)
            print(f"  round {round_index + 1}: {setting} {seconds:.2f} s / 100", flush=True)
        peaks = peaks.best_with(measure_peaks())
    counter.handle.remove()
    labels = torch.arange(args.n) % 10
    rows = []
    for setting in settings:
        scores = score_samples(images[setting], labels, args.data_dir, seed=args.seed)
        rows.append(
            Row(setting, *best[setting], scores["mnist_fid"], scores["mnist_fid_floor"],
                scores["guided_accuracy"]["overall"])
        )  # fmt: skip
    return rows, peaks


def table(rows: list[Row], peaks: Peaks) -> str:
    """The README's Markdown table; speed-up is relative to the first row."""
    lines = [
        "| sampler | steps | precision | s / 100 digits | speed-up | GFLOP/s | % fp32 peak "
        "| % bf16 peak | MNIST-FID (floor) | guided accuracy |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = r.setting
        lines.append(
            f"| {s.sampler} | {s.steps} | {s.precision} | {r.seconds_per_100:.2f} "
            f"| {rows[0].seconds_per_100 / r.seconds_per_100:.2f}x | {r.gflops:.0f} "
            f"| {100 * r.gflops / peaks.fp32:.0f} % | {100 * r.gflops / peaks.bf16:.0f} % "
            f"| {r.mnist_fid:.3f} ({r.mnist_fid_floor:.3f}) | {r.guided_accuracy:.4f} |"
        )
    return "\n".join(lines)


def precision_deltas(rows: list[Row]) -> list[str]:
    """Each precision − fp32 for the settings measured in both (same seeds: a matched pair)."""
    fp32 = {(r.setting.sampler, r.setting.steps): r for r in rows if r.setting.precision == "fp32"}
    lines = []
    for r in rows:
        ref = fp32.get((r.setting.sampler, r.setting.steps))
        if ref is not None and r is not ref:
            lines.append(
                f"{r.setting.sampler} {r.setting.steps}: {r.setting.precision} - fp32 MNIST-FID "
                f"{r.mnist_fid - ref.mnist_fid:+.3f}, guided accuracy "
                f"{r.guided_accuracy - ref.guided_accuracy:+.4f}, "
                f"speed x{ref.seconds_per_100 / r.seconds_per_100:.2f}"
            )
    return lines


def comma_list(kind: type) -> Callable[[str], list]:
    """An argparse type for comma-separated values."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="digits per setting (>= 10)")
    parser.add_argument("--samplers", type=comma_list(str), default=["dpmpp"])
    parser.add_argument(
        "--steps", type=comma_list(int), default=[20],
        help="steps for ddim and dpmpp, comma-separated (ddpm always takes T)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", type=comma_list(str), default=["default", "fp32"],
        help=f"comma-separated, among {', '.join(PRECISIONS)}",
    )  # fmt: skip
    parser.add_argument(
        "--fp32-check", type=comma_list(str), default=[],
        help="sampler:steps settings also run in fp32 (when fp32 is not in --precisions)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the settings")
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        if args.n < 10:
            raise ConfigError(f"--n must be >= 10 to score; got {args.n}")
        model = diffumnist.load_pretrained("class")
        args.num_timesteps = model.config.num_timesteps
        rows, peaks = measure(model, grid(args), args)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    print(header(peaks))
    print(f"n = {args.n} digits per setting, guidance scale {args.guidance_scale}, CPU")
    print(table(rows, peaks))
    print("\n".join(precision_deltas(rows)))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
