"""Training throughput of the class-conditioned recipe model: fp32 eager vs the default mode.

Both modes run in this one process on the same synthetic batches (the network does not care
what the pixels are), so the ratio is measured side by side. Prints images/s for each, the
ratio, and the peak resident memory of the process.

    python benchmarks/train_throughput.py [--steps 30] [--batch-size 128] [--hidden-dim 64]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from diffumnist.config import ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.nets import build_net
from diffumnist.runtime import autocast, resolve_device, resolve_precision


def images_per_second(precision: str, channels_last: bool, args: argparse.Namespace) -> float:
    device = resolve_device("auto")
    config = ModelConfig(kind="class", hidden_dim=args.hidden_dim)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_net(config).to(device, memory_format=fmt)
    diffusion = GaussianDiffusion.from_config(config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(args.batch_size, 1, 28, 28).to(device).contiguous(memory_format=fmt)
    c = F.one_hot(torch.arange(args.batch_size) % 10, 10).float().to(device)

    def step() -> None:
        with autocast(device, precision):
            loss = diffusion.training_loss(
                net, x0, diffusion.sample_timesteps(len(x0), generator).to(device),
                torch.randn(x0.shape, generator=generator).to(device), c,
            )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per mode")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=64)
    args = parser.parse_args()
    device = resolve_device("auto")
    default_precision = resolve_precision("auto", device)
    fp32 = images_per_second("fp32", channels_last=False, args=args)
    default = images_per_second(default_precision, channels_last=True, args=args)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"fp32 eager (contiguous):          {fp32:8.1f} images/s")
    print(f"default ({default_precision}, channels_last): {default:8.1f} images/s")
    print(f"ratio default / fp32:             {default / fp32:8.2f}x")
    print(f"peak RSS:                         {peak_mib:8.0f} MiB")


if __name__ == "__main__":
    main()
