"""How far from this machine's limit: measured matmul peaks and the recipe UNet's FLOPs.

Every benchmark here imports this, measures the peaks in its own run (the machine's speed
drifts with other work, so numbers from another run would not compare), and prints its
achieved GFLOP/s beside the fraction of the fp32 and bf16 peaks. Peaks are measured several
times in a run (between rounds) and the best kept, like the best round of each setting.
FLOPs are those of torch.utils.flop_counter (matmuls and convolutions, 2 per
multiply-add); elementwise work (BatchNorm, GELU, Adam) is not counted, so 100 % is a
true ceiling.

Run alone, it prints the machine's roofline and checks that bf16 pays on this CPU:

    python benchmarks/roofline.py
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffumnist.config import ModelConfig
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.kinds import build_net
from diffumnist.runtime import describe_precision

CPU_FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


@dataclass(frozen=True)
class Peaks:
    """Best measured GFLOP/s of square matmuls, fp32 and bf16."""

    fp32: float
    bf16: float

    def best_with(self, other: Peaks) -> Peaks:
        """The higher of two measurements: other work on the machine only ever slows one."""
        return Peaks(max(self.fp32, other.fp32), max(self.bf16, other.bf16))

    def describe(self, gflops: float) -> str:
        """'123.4 GFLOP/s = 81 % of fp32 peak, 30 % of bf16 peak'."""
        return (
            f"{gflops:6.1f} GFLOP/s = {100 * gflops / self.fp32:3.0f} % of fp32 peak, "
            f"{100 * gflops / self.bf16:3.0f} % of bf16 peak"
        )


def best_seconds(fn, repeats: int, warmup: int = 2) -> float:
    """Shortest wall time of `repeats` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a (size x size) @ (size x size) matmul on the CPU in `dtype`."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def measure_peaks(size: int = 2048, repeats: int = 5) -> Peaks:
    """fp32 and bf16 matmul peaks of this machine, measured now."""
    fp32 = matmul_gflops(torch.float32, size, repeats)
    return Peaks(fp32=fp32, bf16=matmul_gflops(torch.bfloat16, size, repeats))


def conv_gflops(precision: str, batch: int = 128, channels: int = 64, repeats: int = 5) -> float:
    """GFLOP/s of the UNet's commonest layer, 3x3 conv C->C at 28x28, channels_last, eval."""
    conv = nn.Conv2d(channels, channels, 3, 1, 1).to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, 28, 28).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * channels * channels * 9 * 28 * 28
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        return flops / best_seconds(lambda: conv(x), repeats) / 1e9


@dataclass(frozen=True)
class UNetFlops:
    """GFLOP per image of one recipe UNet: a forward pass, and a training step's fwd + bwd."""

    forward: float
    train: float


def unet_flops(kind: str = "class", hidden_dim: int = 64, batch: int = 8) -> UNetFlops:
    """Count the FLOPs of the recipe's UNet of `kind` (random weights; FLOPs do not care)."""
    config = ModelConfig(kind=kind, hidden_dim=hidden_dim)
    net = build_net(config)
    diffusion = GaussianDiffusion.from_config(config)
    x0 = torch.rand(batch, 1, 28, 28)
    t = torch.randint(1, config.num_timesteps + 1, (batch,))
    c = F.one_hot(torch.arange(batch) % 10, 10).float()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(x0, t.float() / config.num_timesteps, c)
    forward = counter.get_total_flops() / batch / 1e9
    with FlopCounterMode(display=False) as counter:
        net.train()
        diffusion.training_loss(net, x0, t, torch.randn_like(x0), c).backward()
    return UNetFlops(forward=forward, train=counter.get_total_flops() / batch / 1e9)


def cpu_name() -> str:
    """'AMD EPYC (2 threads; avx512_bf16 avx512f avx2)': model name and the flags that matter."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line),
        platform.machine(),
    )
    flags = set(text.split())
    present = " ".join(flag for flag in CPU_FEATURES if flag in flags) or "none of " + " ".join(
        CPU_FEATURES
    )
    return f"{model} ({torch.get_num_threads()} threads; {present})"


def header(peaks: Peaks) -> str:
    """The lines every benchmark starts with: machine, torch, precision choice, peaks."""
    return "\n".join(
        [
            f"cpu: {cpu_name()}; torch {torch.__version__}",
            describe_precision(torch.device("cpu")),
            f"measured matmul peak (2048², best over this run): fp32 {peaks.fp32:.1f} GFLOP/s, "
            f"bf16 {peaks.bf16:.1f} GFLOP/s ({peaks.bf16 / peaks.fp32:.2f}x)",
            "machine shared and noisy (about ±30 %): compare ratios within one run; load average "
            f"now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        ]
    )


def main() -> None:
    peaks = measure_peaks()
    print(header(peaks))
    conv32, conv16 = conv_gflops("fp32"), conv_gflops("bf16")
    print(
        f"3x3 conv 64->64 at 28², batch 128, channels_last, eval: fp32 {conv32:.1f}, "
        f"bf16 autocast {conv16:.1f} GFLOP/s ({conv16 / conv32:.2f}x)"
    )
    for kind in ("time", "class"):
        flops = unet_flops(kind)
        print(
            f"recipe {kind} UNet (D=64): {flops.forward:.3f} GFLOP per forward image, "
            f"{flops.train:.3f} GFLOP per training image (forward + backward)"
        )


if __name__ == "__main__":
    main()
