"""Training throughput of the class-conditioned recipe model: fp32 eager vs the default mode.

Both modes run in this one process on the same synthetic batches (the network does not care
what the pixels are), alternating in --rounds so drift in the machine's speed hits both
alike; each mode's figure is its best round. The step is the real one: forward, the DDPM
loss, backward and Adam. Prints images/s, achieved GFLOP/s beside the fraction of the
matmul peaks measured in the same run (benchmarks/roofline.py), the ratio, and peak RSS.

    python benchmarks/train_throughput.py [--steps 15] [--rounds 2] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from roofline import Peaks, header, measure_peaks, unet_flops

from diffumnist.config import ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.kinds import build_net
from diffumnist.runtime import autocast, resolve_device, resolve_precision


def make_step(precision: str, channels_last: bool, args: argparse.Namespace) -> Callable[[], None]:
    """One training step of a fresh, seeded class UNet; calling it trains one batch."""
    device = resolve_device("auto")
    config = ModelConfig(kind="class", hidden_dim=args.hidden_dim)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_net(config).to(device, memory_format=fmt).train()
    diffusion = GaussianDiffusion.from_config(config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(args.batch_size, 1, 28, 28).to(device).contiguous(memory_format=fmt)
    c = F.one_hot(torch.arange(args.batch_size) % 10, 10).float().to(device)

    def step() -> None:
        t = torch.randint(1, config.num_timesteps + 1, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        with autocast(device, precision):
            loss = diffusion.training_loss(net, x0, t.to(device), noise.to(device), c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    return step


def images_per_second(step: Callable[[], None], steps: int, batch_size: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per mode and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=64)
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
    for step in modes.values():
        for _ in range(args.warmup):
            step()
    best = dict.fromkeys(modes, 0.0)
    for _ in range(args.rounds):
        for name, step in modes.items():
            best[name] = max(best[name], images_per_second(step, args.steps, args.batch_size))
        peaks = peaks.best_with(measure_peaks())
    report(best, peaks, gflop_per_image, args)


def report(best: dict[str, float], peaks: Peaks, gflop_per_image: float, args) -> None:
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(header(peaks))
    print(
        f"training step (forward + loss + backward + Adam), class UNet D={args.hidden_dim}, "
        f"batch {args.batch_size}: {gflop_per_image:.3f} GFLOP per image; best of "
        f"{args.rounds} alternating rounds of {args.steps} steps"
    )
    for name, rate in best.items():
        print(f"  {name:32s} {rate:7.1f} images/s  {peaks.describe(rate * gflop_per_image)}")
    fp32, default = best.values()
    print(f"  ratio default / fp32: {default / fp32:.2f}x; peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
