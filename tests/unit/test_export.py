"""Weights-only export: EMA or raw, fp16, and BatchNorm statistics measured afresh."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffumnist.batchnorm import remeasure_running_statistics
from diffumnist.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from diffumnist.cli import main
from diffumnist.config import ModelConfig
from diffumnist.export import export_weights
from diffumnist.kinds import build_net


def test_remeasure_gives_the_plain_average_and_restores_the_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).eval()
    net[1].running_mean.fill_(5.0)  # stale statistics, as an EMA copy carries
    weights = {k: v.clone() for k, v in net.named_parameters()}
    batches = iter([torch.randn(4, 1, 5, 5) * (i + 1) + i for i in range(3)])
    seen = []

    def forward():
        x = next(batches)
        seen.append(net[0](x).detach())
        net(x)

    remeasure_running_statistics(net, forward, batches=3)
    means = torch.stack([a.mean((0, 2, 3)) for a in seen])
    variances = torch.stack([a.transpose(0, 1).flatten(1).var(1) for a in seen])
    torch.testing.assert_close(net[1].running_mean, means.mean(0))
    torch.testing.assert_close(net[1].running_var, variances.mean(0))
    assert net[1].momentum == 0.1 and not net.training
    for name, value in net.named_parameters():
        assert torch.equal(value, weights[name]), name


@pytest.fixture
def run_checkpoint(tmp_path):
    """A training-style checkpoint of a tiny class model with distinct raw and EMA weights."""
    torch.manual_seed(0)
    config = ModelConfig(kind="class", hidden_dim=4, num_timesteps=5)
    raw = build_net(config).state_dict()
    ema = {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in raw.items()}
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, Checkpoint(config, raw, ema_weights=ema, meta={"epoch": 3}))
    return path, raw, ema


def _is_bn_statistic(name: str) -> bool:
    return "running_" in name


def test_export_remeasures_only_the_statistics_deterministically(tmp_path, run_checkpoint):
    source, _, ema = run_checkpoint
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for target in (first, second):
        export_weights(source, target, remeasure_batches=2)
    a, b = load_checkpoint(first), load_checkpoint(second)
    assert a.ema_weights is None and a.optimizer is None
    assert a.meta["ema"] is True and a.meta["epoch"] == 3
    assert a.meta["batchnorm_remeasured"] == {"batches": 2, "batch_size": 512, "precision": "fp32"}
    changed = [k for k in ema if _is_bn_statistic(k) and not torch.equal(a.weights[k], ema[k])]
    assert changed, "no BatchNorm statistic was measured afresh"
    for name, value in ema.items():
        assert torch.equal(a.weights[name], b.weights[name]), name
        if not _is_bn_statistic(name) and "num_batches_tracked" not in name:
            assert torch.equal(a.weights[name], value), name


def test_export_picks_raw_weights_and_fp16(tmp_path, run_checkpoint):
    source, raw, _ = run_checkpoint
    target = tmp_path / "raw.safetensors"
    export_weights(source, target, use_ema=False, half=True)
    out = load_checkpoint(target)
    assert out.meta["ema"] is False and out.meta["storage"] == "fp16"
    for name, value in raw.items():
        expected = value.half() if value.is_floating_point() else value
        assert torch.equal(out.weights[name], expected), name


def test_export_command_and_its_one_line_errors(capsys, tmp_path, run_checkpoint,
                                                make_checkpoint):  # fmt: skip
    source = str(run_checkpoint[0])
    out = tmp_path / "out.safetensors"
    assert main(["export", source, "--out", str(out), "--remeasure-bn", "1"]) == 0
    said = capsys.readouterr().out
    assert "EMA weights" in said and "fp32, BatchNorm remeasured on 1 batches" in said
    assert load_checkpoint(out).meta["batchnorm_remeasured"]["batches"] == 1
    denoiser = str(make_checkpoint("denoiser"))
    for argv, message in [
        ([source, "--out", str(tmp_path / "x.pt")], "must end in .safetensors"),
        ([source, "--out", str(out), "--remeasure-bn", "0"], "positive integer"),
        ([denoiser, "--out", str(out), "--remeasure-bn", "1"], "only time and class"),
        ([source, "--out", str(tmp_path / "missing" / "x.safetensors")], "cannot write"),
        ([str(out), "--out", str(tmp_path / "y.safetensors"), "--raw"], "holds weights only"),
    ]:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_run_without_ema_exports_only_with_raw(tmp_path, make_checkpoint):
    config = ModelConfig(kind="time", hidden_dim=4, num_timesteps=5)
    source = tmp_path / "run.safetensors"
    weights = build_net(config).state_dict()
    save_checkpoint(
        source, Checkpoint(config, weights, optimizer={"state": {}, "param_groups": []})
    )
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        export_weights(source, tmp_path / "a.safetensors")
    shipped_like = tmp_path / "b.safetensors"
    assert export_weights(source, shipped_like, use_ema=False)["ema"] is False
    # fp16 in, fp32 out unless --fp16: the storage the metadata states
    export_weights(shipped_like, tmp_path / "h.safetensors", half=True)
    export_weights(tmp_path / "h.safetensors", tmp_path / "f.safetensors")
    out = load_checkpoint(tmp_path / "f.safetensors")
    assert out.meta["storage"] == "fp32" and out.meta["ema"] is False
    assert all(v.dtype == torch.float32 for v in out.weights.values() if v.is_floating_point())
