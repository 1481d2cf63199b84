"""Checkpoints: save -> load gives identical outputs, writes are atomic, bad files are refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

from diffumnist.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from diffumnist.config import ModelConfig
from diffumnist.models import load


def _train_a_little(net):
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 1, 28, 28), torch.rand(2), torch.eye(10)[:2]).pow(2).mean().backward()
    optimizer.step()
    return optimizer


def test_save_load_gives_identical_samples(tmp_path, tiny_class_model):
    optimizer = _train_a_little(tiny_class_model.net)
    tiny_class_model.eval()
    ckpt = Checkpoint(
        tiny_class_model.config,
        tiny_class_model.net.state_dict(),
        optimizer=optimizer.state_dict(),
        rng_state=torch.Generator().manual_seed(3).get_state(),
        meta={"epoch": 1, "step": 1},
    )
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, ckpt)
    restored = load(path)
    a, _ = tiny_class_model.sample([1, 2], seed=0)
    b, _ = restored.sample([1, 2], seed=0)
    assert torch.equal(a, b)

    back = load_checkpoint(path)
    assert back.meta == {"epoch": 1, "step": 1}
    assert torch.equal(back.rng_state, ckpt.rng_state)
    state = optimizer.state_dict()
    # JSON turns Adam's betas tuple into a list, which load_state_dict accepts alike
    assert back.optimizer["param_groups"] == json.loads(json.dumps(state["param_groups"]))
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            assert torch.equal(back.optimizer["state"][index][key], value)


def test_write_leaves_no_temporary_files(tmp_path):
    config = ModelConfig(kind="denoiser", hidden_dim=4)
    save_checkpoint(tmp_path / "a.safetensors", Checkpoint(config, {"w": torch.ones(2)}))
    save_checkpoint(tmp_path / "a.safetensors", Checkpoint(config, {"w": torch.zeros(2)}))
    assert os.listdir(tmp_path) == ["a.safetensors"]
    assert torch.equal(load_checkpoint(tmp_path / "a.safetensors").weights["w"], torch.zeros(2))


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "]
)
def test_corrupt_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path, tiny_class_model):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, Checkpoint(tiny_class_model.config, tiny_class_model.net.state_dict()))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a DiffuMNIST checkpoint"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path, tiny_class_model):
    wrong = ModelConfig(kind="time", hidden_dim=8, num_timesteps=20)
    path = tmp_path / "wrong.safetensors"
    save_checkpoint(path, Checkpoint(wrong, tiny_class_model.net.state_dict()))
    with pytest.raises(CheckpointError, match="do not fit"):
        load(path)
