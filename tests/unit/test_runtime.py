"""Precision by what the hardware does, glibc's thresholds, and BatchNorm folding for eval."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffumnist import runtime
from diffumnist.config import ConfigError, ModelConfig
from diffumnist.inference import fold_batchnorm, inference_net
from diffumnist.kinds import build_net

CPU = torch.device("cpu")
IS_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize("feature, expected", [("avx512_bf16", "bf16"), ("amx_bf16", "bf16")])
def test_auto_is_bf16_on_cpus_with_native_bf16(monkeypatch, feature, expected):
    monkeypatch.setattr(runtime, "cpu_bf16_feature", lambda: feature)
    assert runtime.resolve_precision("auto", CPU) == expected
    assert runtime.describe_precision(CPU) == f"precision: bf16 autocast (CPU has {feature})"


def test_auto_is_fp32_on_cpus_that_would_emulate_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_feature", lambda: None)
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    assert runtime.describe_precision(CPU).startswith("precision: fp32 (CPU has no AMX-BF16")


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_explicit_precision_is_kept_whatever_the_hardware(monkeypatch, name):
    monkeypatch.setattr(runtime, "cpu_bf16_feature", lambda: None)
    assert runtime.resolve_precision(name, CPU) == name
    assert runtime.describe_precision(CPU, name).endswith("(as requested)")


def test_unknown_precision_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        runtime.resolve_precision("fp16", CPU)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo")
def test_bf16_probe_agrees_with_the_kernels_cpu_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    listed = bool(flags & set(runtime.BF16_CPU_FLAGS))
    assert runtime.cpu_runs_bf16_natively() == listed


def minor_faults_of_reallocating(tune: str) -> int:
    """Minor page faults, in a child, of allocating and freeing 40 x 4 MiB (rounds 2 to 6)."""
    code = (
        "import resource, torch, diffumnist\n"
        "faults = 0\n"
        "for round in range(6):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    buffers = [torch.ones(2**20) for _ in range(40)]\n"
        "    del buffers\n"
        "    if round > 0:\n"
        "        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(faults)\n"
    )
    env = {**os.environ, "DIFFUMNIST_TUNE_MALLOC": tune}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not IS_GLIBC, reason="the tuning targets glibc's malloc")
def test_importing_diffumnist_stops_glibc_from_faulting_freed_buffers_in_again():
    # glibc trims the freed 160 MiB off its heap each round (about 41,000 faults a round;
    # measured 82,000 to 205,000 over rounds 2-6); tuned, it keeps them (0 to 4,096)
    default, tuned = minor_faults_of_reallocating("0"), minor_faults_of_reallocating("1")
    assert tuned * 4 < default, (tuned, default)


def test_malloc_tuning_can_be_turned_off():
    code = "import diffumnist.allocator as a; print(a.tune_malloc())"
    env = {**os.environ, "DIFFUMNIST_TUNE_MALLOC": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def with_trained_statistics(net: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return net.eval()


# the shipped models' architectures (denoiser D=128, time and class D=64)
SHIPPED = [("denoiser", 128), ("time", 64), ("class", 64)]


@pytest.mark.parametrize("kind, hidden_dim", SHIPPED)
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_network_computes_what_the_original_does_in_eval(kind, hidden_dim, channels_last):
    torch.manual_seed(0)
    net = with_trained_statistics(build_net(ModelConfig(kind=kind, hidden_dim=hidden_dim)), 1)
    folded = inference_net(net) if channels_last else fold_batchnorm(net)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 28, 28, generator=generator)
    t = torch.rand(4, generator=generator)
    c = nn.functional.one_hot(torch.tensor([0, 3, 7, 9]), 10).float()
    with torch.inference_mode():
        expected, actual = net(x, t, c), folded(x, t, c)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_folding_removes_every_batchnorm_and_leaves_the_original_alone():
    net = with_trained_statistics(build_net(ModelConfig(kind="class", hidden_dim=8)), 0)
    before = {name: value.clone() for name, value in net.state_dict().items()}
    folded = fold_batchnorm(net)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert batchnorms == 17  # every Conv2d/ConvTranspose2d -> BN pair of the recipe's UNet
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    assert not any(p.requires_grad for p in folded.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
