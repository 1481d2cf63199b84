"""Shared fixtures: tiny networks and short schedules keep the fast tests fast.

MNIST is read from the data setting; tests default it to ../shared/data (read-only).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DIFFUMNIST_DATA", str(REPO.parent / "shared" / "data"))
# DIFFUMNIST_LONG_TESTS=1 raises the reliability figures (SIGKILLs, fuzzed inputs) far above
# what CI runs; README states the figures of the last long run.
LONG_TESTS = os.environ.get("DIFFUMNIST_LONG_TESTS") == "1"


@pytest.fixture
def data_dir() -> Path:
    return Path(os.environ["DIFFUMNIST_DATA"])


@pytest.fixture
def tiny_class_model():
    """A class-conditioned DDPM with D=8 and T=20, randomly initialised but seeded."""
    from diffumnist.config import ModelConfig
    from diffumnist.models import DiffusionModel

    torch.manual_seed(0)
    return DiffusionModel(ModelConfig(kind="class", hidden_dim=8, num_timesteps=20)).eval()


@pytest.fixture
def make_checkpoint(tmp_path):
    """Write a randomly initialised, seeded checkpoint of `kind`; returns its path."""
    from diffumnist.checkpoint import Checkpoint, save_checkpoint
    from diffumnist.config import ModelConfig
    from diffumnist.kinds import build_net

    def make(kind: str, hidden_dim: int = 4, num_timesteps: int = 5) -> Path:
        torch.manual_seed(0)
        config = ModelConfig(kind=kind, hidden_dim=hidden_dim, num_timesteps=num_timesteps)
        path = tmp_path / f"{kind}-{hidden_dim}-{num_timesteps}.safetensors"
        save_checkpoint(path, Checkpoint(config, build_net(config).state_dict()))
        return path

    return make
