"""Data-parallel training throughput: one process against N ranks, side by side in one run.

Each setting runs `diffumnist train class` (the recipe: D=64, batch 128, bf16 where the
hardware has it) twice, stopping after --steps A and after B optimizer steps, and reports
(B − A) × batch / (time_B − time_A): process start-up, loading MNIST and the first steps'
warm-up cancel out. One process uses every core; N ranks get cores / N threads each (the
`--nproc` default). Settings: 1 process, N ranks with global BatchNorm (the default, equal
to the single-process run), N ranks with local BatchNorm (no statistics messages).

    python benchmarks/ddp_throughput.py --nproc 2 --steps 10,30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds_to_train(steps: int, nproc: int, batchnorm: str, folder: Path) -> float:
    out = folder / f"{nproc}-{batchnorm}-{steps}"
    argv = [sys.executable, "-m", "diffumnist", "train", "class", "--out", str(out),
            "--max-steps", str(steps), "--preview-every", "0", "--batchnorm", batchnorm,
            "--nproc", str(nproc)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks to compare with 1 process")
    parser.add_argument("--steps", default="10,30", help="A,B: the two stopping points")
    args = parser.parse_args()
    short, long = (int(v) for v in args.steps.split(","))
    settings = [(1, "global"), (args.nproc, "global"), (args.nproc, "local")]
    print(f"{os.cpu_count()} CPUs; class model, batch 128; images/s over steps {short}..{long}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc, batchnorm in settings:
            extra = seconds_to_train(long, nproc, batchnorm, Path(tmp))
            extra -= seconds_to_train(short, nproc, batchnorm, Path(tmp))
            rates[nproc, batchnorm] = (long - short) * 128 / extra
            label = "1 process" if nproc == 1 else f"{nproc} ranks, {batchnorm} BatchNorm"
            print(f"{label:<30} {rates[nproc, batchnorm]:8.1f} img/s", flush=True)
    single = rates[1, "global"]
    for nproc, batchnorm in settings[1:]:
        ratio = rates[nproc, batchnorm] / single
        print(f"ratio {nproc} ranks ({batchnorm}) / 1 process: {ratio:.2f}x")


if __name__ == "__main__":
    main()
