"""Device and precision choices, made once and the same way for training and sampling.

`auto` precision means bf16 autocast where the hardware runs it natively (CPUs with
AMX-BF16, CUDA GPUs with bf16 support) and fp32 elsewhere; on an AMX CPU this trains the
recipe's convnets about 3x faster than fp32. Parameters and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

from diffumnist.config import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    """True when /proc/cpuinfo lists the amx_bf16 flag (Linux; elsewhere False)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no CUDA GPU is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto -> bf16 where native (AMX CPU or bf16 GPU), else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_amx_bf16() else "fp32"
    if name not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be one of auto, fp32, bf16; got {name!r}")
    return name


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on `device` when precision is bf16; a no-op for fp32."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
