"""Pictures: sample grids and sampling-process GIFs, as files or as encoded bytes.

Consumes tensors and sampler frames only; never imports training code. Grids come from
torchvision (Pillow encodes them), GIFs from imageio. The CLI and the web page share the
encoders here; `figures` draws the plots with matplotlib.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import imageio.v3 as iio
import numpy as np
import torch
from torchvision.utils import make_grid, save_image


def save_grid(
    images: torch.Tensor,
    path: Path | str | BinaryIO,
    nrow: int = 10,
    scale: int = 1,
    image_format: str = "png",
) -> None:
    """images float (N, 1, H, W) in [0, 1] -> one grid image, `nrow` images per row."""
    if scale > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=scale, mode="nearest")
    target = path if hasattr(path, "write") else str(path)
    save_image(
        images.float().clamp(0, 1), target, nrow=nrow, padding=2, pad_value=1.0,
        format=image_format,
    )  # fmt: skip


def grid_bytes(
    images: torch.Tensor, nrow: int = 10, scale: int = 1, image_format: str = "png"
) -> bytes:
    """`save_grid` into memory: the encoded file's bytes (write them atomically)."""
    buffer = io.BytesIO()
    save_grid(images.float().cpu(), buffer, nrow, scale, image_format)
    return buffer.getvalue()


def png_bytes(images: torch.Tensor, nrow: int = 10, scale: int = 1) -> bytes:
    return grid_bytes(images, nrow, scale, "png")


def gif_bytes(frames: torch.Tensor, nrow: int = 10, scale: int = 2) -> bytes:
    """`save_gif` into memory: the GIF's bytes."""
    buffer = io.BytesIO()
    save_gif(frames, buffer, nrow=nrow, scale=scale)
    return buffer.getvalue()


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
