"""Pictures: sample grids, sampling-process GIFs, loss curves.

Consumes tensors and sampler frames only; never imports training code. Grids come from
torchvision, GIFs from imageio, plots from matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import imageio.v3 as iio
import numpy as np
import torch
from torchvision.utils import make_grid, save_image


def save_grid(
    images: torch.Tensor, path: Path | str | BinaryIO, nrow: int = 10, scale: int = 1
) -> None:
    """images float (N, 1, H, W) in [0, 1] -> one PNG grid, `nrow` images per row."""
    if scale > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=scale, mode="nearest")
    target = path if hasattr(path, "write") else str(path)
    save_image(
        images.float().clamp(0, 1), target, nrow=nrow, padding=2, pad_value=1.0, format="png"
    )


def frames_to_grids(frames: torch.Tensor, nrow: int = 10, scale: int = 2) -> np.ndarray:
    """uint8 frames (F, N, H, W) -> uint8 grid frames (F, H', W') for a GIF."""
    grids = []
    for frame in frames:
        images = frame.unsqueeze(1)  # (N, 1, H, W)
        if scale > 1:
            images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        grid = make_grid(images, nrow=nrow, padding=2, pad_value=255)  # (3, H', W')
        grids.append(grid[0].numpy())
    return np.stack(grids)


def save_gif(
    frames: torch.Tensor,
    path: Path | str | BinaryIO,
    nrow: int = 10,
    scale: int = 2,
    max_frames: int = 60,
    duration_ms: int = 60,
    hold_last_ms: int = 1500,
) -> None:
    """Animate uint8 frames (F, N, H, W): evenly thinned to `max_frames`, last frame held."""
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round())
    grids = frames_to_grids(frames[torch.as_tensor(keep, dtype=torch.long)], nrow, scale)
    durations = [duration_ms] * (len(grids) - 1) + [hold_last_ms]
    target = path if hasattr(path, "write") else str(path)
    iio.imwrite(target, grids, extension=".gif", duration=durations, loop=0)
