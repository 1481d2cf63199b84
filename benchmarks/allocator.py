"""The C allocator's share of sampling and training time: glibc as is, tuned, jemalloc, tcmalloc.

glibc serves allocations above its mmap threshold with fresh mappings and returns them, and
trims its heap, so the sampler's activation buffers (tens of MiB per step) are page-faulted
in again at every step. `import diffumnist` raises both thresholds (allocator.tune_malloc);
DIFFUMNIST_TUNE_MALLOC=0 turns that off. jemalloc and tcmalloc, where installed (Debian:
libjemalloc2, libtcmalloc-minimal4), are compared through LD_PRELOAD; neither is a
dependency. Each setting runs in its own process, the settings alternate for --rounds, and
each process times one workload after a warm-up:

  sample: 100 guided digits (class model, γ = 5, dpmpp 20) with model.sample, auto precision
  train:  --steps training steps of the class UNet, batch 128, auto precision, channels_last

Printed per setting: wall seconds of the timed part (best round), its system CPU time and
minor page faults (getrusage of the process itself), and the whole child process's system
time and minor faults (getrusage RUSAGE_CHILDREN), achieved GFLOP/s against the matmul
peaks measured between rounds, and peak RSS.

    python benchmarks/allocator.py [--workload sample|train] [--rounds 2]
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from roofline import Peaks, header, measure_peaks, unet_flops

PRELOADS = {
    "jemalloc": ("libjemalloc.so.2", "jemalloc"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "tcmalloc_minimal"),
}
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_preload(filename: str, short_name: str) -> str | None:
    """An absolute path to the shared library, or None when it is not installed."""
    for folder in LIB_DIRS:
        if (Path(folder) / filename).exists():
            return str(Path(folder) / filename)
    return ctypes.util.find_library(short_name)


def settings() -> dict[str, dict[str, str]]:
    """Environment overrides per setting, for the allocators present on this machine."""
    out = {"glibc default": {"DIFFUMNIST_TUNE_MALLOC": "0"}, "glibc tuned (diffumnist)": {}}
    for name, (filename, short_name) in PRELOADS.items():
        path = find_preload(filename, short_name)
        if path is not None:
            out[f"{name} (LD_PRELOAD)"] = {"DIFFUMNIST_TUNE_MALLOC": "0", "LD_PRELOAD": path}
    return out


def child(workload: str, steps: int) -> None:
    """Run one workload in this process and print its measurements as one JSON line."""
    import torch

    import diffumnist
    from diffumnist.allocator import tune_malloc
    from diffumnist.runtime import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    if workload == "sample":
        run, images = sample_workload(diffumnist, precision)
    else:
        run, images = train_workload(precision, steps)
    run()  # warm-up
    images[0] = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "seconds": seconds,
        "sys": after.ru_stime - before.ru_stime,
        "minflt": after.ru_minflt - before.ru_minflt,
        "images": images[0],
        "maxrss_mib": after.ru_maxrss / 1024,
        "tuned": tune_malloc(),
        "precision": precision,
    }
    print(json.dumps(result))


def sample_workload(diffumnist, precision: str):
    """model.sample of 100 guided digits; counts the network's forward images."""
    import torch

    model = diffumnist.load_pretrained("class")
    images = [0]
    net_type = type(model.net)  # sample() may run a rewritten copy of model.net: same type

    def count(module: torch.nn.Module, inputs: tuple) -> None:
        if type(module) is net_type:
            images[0] += len(inputs[0])

    torch.nn.modules.module.register_module_forward_pre_hook(count)
    digits = torch.arange(100) % 10

    def run() -> None:
        model.sample(
            digits, guidance_scale=5.0, seed=0, precision=precision, sampler="dpmpp", steps=20,
            frame_every=10**9,
        )  # fmt: skip

    return run, images


def train_workload(precision: str, steps: int):
    """`steps` real training steps (counted in training images)."""
    from train_throughput import make_step

    step = make_step(precision, True, argparse.Namespace(hidden_dim=64, batch_size=128))
    images = [0]

    def run() -> None:
        for _ in range(steps):
            step()
        images[0] += steps * 128

    return run, images


def run_child(env_overrides: dict[str, str], args: argparse.Namespace) -> dict:
    """Start one child with `env_overrides`; its JSON plus its RUSAGE_CHILDREN share."""
    env = {k: v for k, v in os.environ.items() if k != "DIFFUMNIST_TUNE_MALLOC"}
    env.update(env_overrides)
    command = [sys.executable, __file__, "--child", args.workload, "--steps", str(args.steps)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_sys"] = after.ru_stime - before.ru_stime
    result["process_minflt"] = after.ru_minflt - before.ru_minflt
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("sample", "train"), default="sample")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of all settings")
    parser.add_argument("--steps", type=int, default=30, help="training steps (train workload)")
    parser.add_argument("--child", choices=("sample", "train"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    flops = unet_flops("class")
    gflop_per_image = flops.forward if args.workload == "sample" else flops.train
    peaks = measure_peaks()
    results: dict[str, list[dict]] = {name: [] for name in settings()}
    for round_index in range(args.rounds):
        for name, env in settings().items():
            results[name].append(run_child(env, args))
            print(f"  round {round_index + 1}: {name}: {results[name][-1]}", flush=True)
        peaks = peaks.best_with(measure_peaks())
    report(results, peaks, gflop_per_image, args)


def report(results: dict[str, list[dict]], peaks: Peaks, gflop_per_image: float, args) -> None:
    print(header(peaks))
    what = "100 guided digits, dpmpp 20" if args.workload == "sample" else f"{args.steps} steps"
    print(f"workload: {args.workload} ({what}, {results['glibc default'][0]['precision']})")
    print(
        "| allocator | wall s (each round) | sys s | minor faults | process sys s "
        "| process faults | GFLOP/s (best round) | peak RSS MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        walls = " / ".join(f"{r['seconds']:.2f}" for r in runs)
        gflops = best["images"] * gflop_per_image / best["seconds"]
        print(
            f"| {name} | {walls} | {best['sys']:.2f} | {best['minflt'] / 1e6:.2f} M "
            f"| {best['process_sys']:.2f} | {best['process_minflt'] / 1e6:.2f} M "
            f"| {peaks.describe(gflops)} | {max(r['maxrss_mib'] for r in runs):.0f} |"
        )
    base = min(r["seconds"] for r in results["glibc default"])
    ratios = ", ".join(
        f"{name} {base / min(r['seconds'] for r in runs):.2f}x" for name, runs in results.items()
    )
    print(f"speed relative to glibc default (best rounds): {ratios}")


if __name__ == "__main__":
    main()
