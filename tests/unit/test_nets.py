"""The recipe's UNets: shapes, conditioning, and the parameter counts they imply."""

from __future__ import annotations

import pytest
import torch

from diffumnist.config import ModelConfig
from diffumnist.kinds import build_net
from diffumnist.nets import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet


def test_unconditional_unet_keeps_shape():
    net = UnconditionalUNet(hidden_dim=8)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 1, 28, 28)


def test_time_unet_uses_t():
    torch.manual_seed(0)
    net = TimeConditionalUNet(hidden_dim=8).eval()
    x = torch.randn(2, 1, 28, 28)
    out_a, out_b = net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.9, 0.9]))
    assert out_a.shape == (2, 1, 28, 28)
    assert not torch.allclose(out_a, out_b)
    with pytest.raises(ValueError):
        net(x)


def test_class_unet_zero_vector_is_a_distinct_condition():
    torch.manual_seed(0)
    net = ClassConditionalUNet(hidden_dim=8).train()  # batch statistics: a fresh net's
    x, t = torch.randn(4, 1, 28, 28), torch.full((4,), 0.5)  # eval BN shrinks signals
    digit_zero = torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 10).float()
    no_class = torch.zeros(4, 10)
    assert (net(x, t, digit_zero) - net(x, t, no_class)).abs().max() > 1e-3


def test_recipe_sizes():
    """D=64 class model and D=128 denoiser: the sizes the recipe's architecture implies."""
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(build_net(ModelConfig(kind="class", hidden_dim=64))) == 2_019_201
    assert count(build_net(ModelConfig(kind="time", hidden_dim=64))) == 1_996_417
    assert count(build_net(ModelConfig(kind="denoiser", hidden_dim=128))) == 7_891_073
