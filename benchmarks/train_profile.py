"""Where the training step's time goes: a torch.profiler table of the recipe class UNet's step
(forward, DDPM loss, backward, Adam) in the default mode (bf16 autocast, channels_last).

    python benchmarks/train_profile.py [--steps 6] [--threads 2] [--rows 25]
"""

from __future__ import annotations

import argparse

import torch
from roofline import cpu_name
from torch.profiler import ProfilerActivity, profile
from train_throughput import make_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="profiled steps (after 2 warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=64)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    step = make_step("bf16", channels_last=True, args=args)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"cpu: {cpu_name()}; torch {torch.__version__}; batch {args.batch_size}, "
          f"{args.steps} steps, bf16 autocast, channels_last")  # fmt: skip
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(table)


if __name__ == "__main__":
    main()
