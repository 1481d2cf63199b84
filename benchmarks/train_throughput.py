"""Training throughput of the class-conditioned recipe model: fp32 eager vs the default mode.

Both modes run in this one process on the same synthetic batches (the network does not care
what the pixels are), alternating in --rounds so drift in the machine's speed hits both
alike; each mode's figure is its best round. The step is the real one: forward, the DDPM
loss, backward and Adam. Prints images/s, achieved GFLOP/s beside the fraction of the
matmul peaks measured in the same run (benchmarks/roofline.py), the ratio, and peak RSS.

    python benchmarks/train_throughput.py [--steps 15] [--rounds 2] [--batch-size 128] \\
        [--also-batch 256,64] [--compile]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from roofline import Peaks, header, measure_peaks, unet_flops

from diffumnist.config import ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.kinds import build_net
from diffumnist.runtime import autocast, resolve_device, resolve_precision


def make_step(precision: str, channels_last: bool, args: argparse.Namespace,
              compiled: bool = False, batch_size: int = 0) -> Callable[[], int]:  # fmt: skip
    """One training step of a fresh, seeded class UNet; calling it trains one batch and
    returns its size. With `compiled`, the network's forward (and so its backward) runs
    through torch.compile; `batch_size` overrides --batch-size."""
    batch_size = batch_size or args.batch_size
    device = resolve_device("auto")
    config = ModelConfig(kind="class", hidden_dim=args.hidden_dim)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_net(config).to(device, memory_format=fmt).train()
    diffusion = GaussianDiffusion.from_config(config).to(device)
    forward = torch.compile(net) if compiled else net
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch_size, 1, 28, 28).to(device).contiguous(memory_format=fmt)
    c = F.one_hot(torch.arange(batch_size) % 10, 10).float().to(device)

    def step() -> int:
        t = torch.randint(1, config.num_timesteps + 1, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        with autocast(device, precision):
            loss = diffusion.training_loss(forward, x0, t.to(device), noise.to(device), c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        return batch_size

    return step


def images_per_second(step: Callable[[], int], steps: int) -> float:
    started = time.perf_counter()
    images = sum(step() for _ in range(steps))
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15,
                        help="timed steps of --batch-size per mode and round (other batch sizes "
                        "train as many images)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--compile", action="store_true",
                        help="also the default mode through torch.compile (inductor), from an "
                        "empty compile cache; its first step's seconds are printed")  # fmt: skip
    parser.add_argument(
        "--also-batch",
        type=lambda text: [int(b) for b in text.split(",")],
        default=[],
        help="also the default mode at these batch sizes, e.g. 256,64",
    )
    args = parser.parse_args()
    device = resolve_device("auto")
    peaks = measure_peaks()
    gflop_per_image = unet_flops("class", args.hidden_dim).train
    default_precision = resolve_precision("auto", device)
    modes = {
        "fp32 eager (contiguous)": make_step("fp32", channels_last=False, args=args),
        f"default ({default_precision}, channels_last)": make_step(
            default_precision, channels_last=True, args=args
        ),
    }
    for batch_size in args.also_batch:
        modes[f"default, batch {batch_size}"] = make_step(
            default_precision, True, args, batch_size=batch_size
        )
    if args.compile:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()  # a user's first run
        modes["default + torch.compile"] = make_step(default_precision, True, args, compiled=True)
    first_step, steps = {}, {}
    for name, step in modes.items():
        started = time.perf_counter()
        batch_size = step()
        first_step[name] = time.perf_counter() - started
        for _ in range(args.warmup - 1):
            step()
        # every mode trains the same images per round: --steps batches of --batch-size
        steps[name] = max(1, args.steps * args.batch_size // batch_size)
    best = dict.fromkeys(modes, 0.0)
    for _ in range(args.rounds):
        for name, step in modes.items():
            best[name] = max(best[name], images_per_second(step, steps[name]))
        peaks = peaks.best_with(measure_peaks())
    report(best, first_step, peaks, gflop_per_image, args)


def report(best: dict[str, float], first_step: dict[str, float], peaks: Peaks,
           gflop_per_image: float, args) -> None:  # fmt: skip
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(header(peaks))
    print(
        f"training step (forward + loss + backward + Adam), class UNet D={args.hidden_dim}, "
        f"batch {args.batch_size}: {gflop_per_image:.3f} GFLOP per image; best of "
        f"{args.rounds} alternating rounds of {args.steps} steps"
    )
    for name, rate in best.items():
        print(f"  {name:32s} {rate:7.1f} images/s  {peaks.describe(rate * gflop_per_image)}; "
              f"first step {first_step[name]:.1f} s")  # fmt: skip
    fp32, default = list(best.values())[:2]
    print(f"  ratio default / fp32: {default / fp32:.2f}x; peak RSS {peak_mib:.0f} MiB")
    for name, rate in list(best.items())[2:]:
        print(f"  ratio {name} / default: {rate / default:.2f}x")


if __name__ == "__main__":
    main()
