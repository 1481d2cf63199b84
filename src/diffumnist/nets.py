"""The recipe's UNets, exactly as SPEC.md describes them.

Networks know nothing about noise schedules or model kinds (each kind in kinds/ picks its
network): the time models take t as the fraction t/T already, and the class model takes a
one-hot (or all-zero, "no class") vector.
All three share `forward(x, t=None, c=None)` so training and sampling code treat them alike.
"""

from __future__ import annotations

import torch
from torch import nn


def conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Conv2d(k3, s1, p1) -> BN -> GELU; keeps H, W."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.BatchNorm2d(out_ch), nn.GELU())


def down_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Conv2d(k3, s2, p1) -> BN -> GELU; halves H, W."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 2, 1), nn.BatchNorm2d(out_ch), nn.GELU())


def up_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """ConvTranspose2d(k4, s2, p1) -> BN -> GELU; doubles H, W."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.GELU()
    )


def flatten() -> nn.Sequential:
    """AvgPool2d(7) -> GELU: 7x7 -> 1x1, no BN."""
    return nn.Sequential(nn.AvgPool2d(7), nn.GELU())


def unflatten(channels: int) -> nn.Sequential:
    """ConvTranspose2d(k7, s7) -> BN -> GELU: 1x1 -> 7x7."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, 7, 7, 0), nn.BatchNorm2d(channels), nn.GELU()
    )


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv(in_ch, out_ch), conv(out_ch, out_ch))


def down_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(down_conv(in_ch, out_ch), conv_block(out_ch, out_ch))


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(up_conv(in_ch, out_ch), conv_block(out_ch, out_ch))


class FCBlock(nn.Module):
    """Linear -> GELU -> Linear: embeds t/T or a one-hot class into (N, C, 1, 1)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, out_features),
            nn.GELU(),
            nn.Linear(out_features, out_features),
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v)[:, :, None, None]  # (N, C, 1, 1)


class UnconditionalUNet(nn.Module):
    """The recipe's UNet (1x28x28 -> 1x28x28). Subclasses add conditioning at two points."""

    def __init__(self, hidden_dim: int = 128, in_channels: int = 1) -> None:
        super().__init__()
        d = hidden_dim
        self.hidden_dim = d
        self.in_block = conv_block(in_channels, d)  # s0: (N, D, 28, 28)
        self.down1 = down_block(d, d)  # s1: (N, D, 14, 14)
        self.down2 = down_block(d, 2 * d)  # s2: (N, 2D, 7, 7)
        self.flatten = flatten()  # (N, 2D, 1, 1)
        self.unflatten = unflatten(2 * d)  # (N, 2D, 7, 7)
        self.up1 = up_block(4 * d, d)  # (N, D, 14, 14)
        self.up2 = up_block(2 * d, d)  # (N, D, 28, 28)
        self.out_block = conv_block(2 * d, d)
        self.out_conv = nn.Conv2d(d, in_channels, 3, 1, 1)

    def modulate(
        self, h: torch.Tensor, level: int, t: torch.Tensor | None, c: torch.Tensor | None
    ) -> torch.Tensor:
        """Inject conditioning after the unflatten (level 1) and the first up block (2)."""
        return h

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | None = None, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (N, 1, 28, 28); t: (N,) fractions t/T; c: (N, num_classes) one-hot or zeros."""
        s0 = self.in_block(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        h = self.modulate(self.unflatten(self.flatten(s2)), 1, t, c)
        h = self.modulate(self.up1(torch.cat([s2, h], dim=1)), 2, t, c)
        h = self.up2(torch.cat([s1, h], dim=1))
        h = self.out_block(torch.cat([s0, h], dim=1))
        return self.out_conv(h)


class TimeConditionalUNet(UnconditionalUNet):
    """unflatten += t1(t/T); up1 += t2(t/T)."""

    def __init__(self, hidden_dim: int = 64, in_channels: int = 1) -> None:
        super().__init__(hidden_dim, in_channels)
        self.t1 = FCBlock(1, 2 * hidden_dim)
        self.t2 = FCBlock(1, hidden_dim)

    def modulate(
        self, h: torch.Tensor, level: int, t: torch.Tensor | None, c: torch.Tensor | None
    ) -> torch.Tensor:
        if t is None:
            raise ValueError("this network needs the timestep fraction t")
        embed = self.t1 if level == 1 else self.t2
        return h + embed(t.to(h.dtype).view(-1, 1))


class ClassConditionalUNet(TimeConditionalUNet):
    """unflatten = c1(c) * unflatten + t1; up1 = c2(c) * up1 + t2 (zero c = no class)."""

    def __init__(self, hidden_dim: int = 64, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__(hidden_dim, in_channels)
        self.num_classes = num_classes
        self.c1 = FCBlock(num_classes, 2 * hidden_dim)
        self.c2 = FCBlock(num_classes, hidden_dim)

    def modulate(
        self, h: torch.Tensor, level: int, t: torch.Tensor | None, c: torch.Tensor | None
    ) -> torch.Tensor:
        if c is None:
            raise ValueError("this network needs a class vector c (zeros for no class)")
        scale = (self.c1 if level == 1 else self.c2)(c.to(h.dtype))
        return super().modulate(scale * h, level, t, c)
