"""Every figure of the recipe, from the shipped weights and the kept training run folders.

`diffumnist figures --out docs --runs training` redraws them all. The run folders hold what
training saved: `loss.jsonl` and small per-epoch `previews/epoch_NNN.npz` sample sets, so no
intermediate checkpoint has to be kept. Sampling uses the recipe's DDPM sampler and fixed
seeds, so the pictures are the same on every run on the same machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from diffumnist.config import ConfigError
from diffumnist.data import add_noise, load_split, to_unit
from diffumnist.evaluate import ROBUSTNESS_SIGMAS as SIGMAS
from diffumnist.kinds import get_kind
from diffumnist.pretrained import load_pretrained
from diffumnist.sampling import SamplingConfig
from diffumnist.viz import save_gif, save_grid

EPOCHS_SHOWN = (1, 5, 10, 15, 20)
GUIDANCE_SCALES = (0.0, 1.0, 3.0, 5.0, 10.0)
SEED = 42


def _read_log(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "loss.jsonl"
    if not path.exists():
        raise ConfigError(f"{path} is missing: figures need the training run folders (--runs)")
    entries = [json.loads(line) for line in path.read_text().splitlines() if line]
    return np.array([e["step"] for e in entries]), np.array([e["loss"] for e in entries])


def _preview(run_dir: Path, epoch: int) -> dict[str, np.ndarray]:
    path = run_dir / "previews" / f"epoch_{epoch:03d}.npz"
    if not path.exists():
        raise ConfigError(f"{path} is missing: figures need the training previews (--runs)")
    with np.load(path) as data:
        return dict(data)


def _image_row(ax, images: torch.Tensor, title: str, nrow: int) -> None:
    """Draw images (N, 1, H, W) in [0, 1] as one grid on a matplotlib axis."""
    grid = make_grid(images.float().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def loss_curves(runs: Path, out: Path) -> list[Path]:
    """Training loss per step (log scale) with a 100-step moving average."""
    paths = []
    for kinds, name in ((("denoiser",), "denoiser_loss.png"), (("time", "class"), "ddpm_loss.png")):
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        for kind in kinds:
            steps, losses = _read_log(runs / kind)
            smooth = np.convolve(losses, np.ones(100) / 100, mode="valid")
            ax.plot(steps, losses, alpha=0.25, linewidth=0.5)
            ax.plot(steps[99:], smooth, label=f"{kind} (100-step mean)")
        ax.set(yscale="log", xlabel="optimizer step", ylabel="L2 loss")
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out / name))
    return paths


def denoiser_figures(runs: Path, out: Path, data_dir: Path | None) -> list[Path]:
    """Noising at seven σ; epochs 1 and 5 (clean / noisy / denoised); OOD sweep."""
    digit = to_unit(load_split("test", data_dir)[0][:1])  # (1, 1, 28, 28)
    noisy = torch.cat(  # the same noise at every σ
        [add_noise(digit, s, torch.Generator().manual_seed(SEED)) for s in SIGMAS]
    )
    fig = Figure(figsize=(8, 1.8))
    ax = fig.subplots()
    _image_row(ax, noisy, "noising at σ = " + ", ".join(map(str, SIGMAS)), nrow=len(SIGMAS))
    paths = [_save(fig, out / "noising.png")]

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, epoch in zip(axes, (1, 5), strict=True):
        p = _preview(runs / "denoiser", epoch)
        rows = torch.from_numpy(np.concatenate([p["clean"], p["noisy"], p["denoised"]]))
        _image_row(ax, rows, f"after epoch {epoch}: clean / noisy (σ=0.5) / denoised", 8)
    paths.append(_save(fig, out / "denoiser_epochs.png"))

    denoised = load_pretrained("denoiser").denoise(noisy)
    fig = Figure(figsize=(8, 2.8))
    ax = fig.subplots()
    rows = torch.cat([noisy, denoised])
    _image_row(ax, rows, "out of distribution: noisy (top) and denoised (bottom), σ = 0 … 1", 7)
    paths.append(_save(fig, out / "denoiser_ood.png"))
    return paths


def epoch_samples(runs: Path, out: Path) -> list[Path]:
    """Samples after epochs 5 and 20 (class model: 4 of each digit, one column per digit)."""
    paths = []
    for kind in ("time", "class"):
        fig = Figure(figsize=(12, 3.2))
        axes = fig.subplots(1, 2)
        for ax, epoch in zip(axes, (5, 20), strict=True):
            samples = torch.from_numpy(_preview(runs / kind, epoch)["samples"])
            if get_kind(kind).conditional:  # stored digit-major; show one column per digit
                samples = samples.view(10, 4, 1, 28, 28).transpose(0, 1).reshape(40, 1, 28, 28)
            _image_row(ax, samples, f"{kind} model after epoch {epoch}", nrow=10)
        paths.append(_save(fig, out / f"{kind}_samples_epochs.png"))
    return paths


def epochs_animation(runs: Path, out: Path) -> Path:
    """One seed, the class model after epochs 1, 5, 10, 15, 20: one row each, animated."""
    frames = [torch.from_numpy(_preview(runs / "class", e)["frames"]) for e in EPOCHS_SHOWN]
    stacked = torch.cat(frames, dim=1)  # (F, 5 * 10, 28, 28): rows are epochs
    path = out / "class_epochs.gif"
    save_gif(stacked, path, nrow=10, max_frames=len(stacked))
    return path


def process_animations(out: Path, sampling: Mapping[str, SamplingConfig]) -> list[Path]:
    """The sampler at work: time model (10 samples), class model (digits 0-9); `sampling`
    holds each kind's settings."""
    paths = []
    for kind in ("time", "class"):
        model = load_pretrained(kind)
        c = torch.arange(10) if model.kind.conditional else None
        samples, frames = model.generate(
            c, sampling[kind].replace(seed=SEED), n=None if c is not None else 10
        )
        save_grid(samples, out / f"{kind}_final.png", nrow=10, scale=2)
        save_gif(frames, out / f"{kind}_process.gif", nrow=10)
        paths += [out / f"{kind}_final.png", out / f"{kind}_process.gif"]
    return paths


def guidance_strip(out: Path, sampling: SamplingConfig) -> Path:
    """The same seed at γ = 0, 1, 3, 5, 10: one row per scale, one column per digit."""
    model = load_pretrained("class")
    fig = Figure(figsize=(7, 1.3 * len(GUIDANCE_SCALES)))
    axes = fig.subplots(len(GUIDANCE_SCALES), 1)
    for ax, scale in zip(axes, GUIDANCE_SCALES, strict=True):
        config = sampling.replace(guidance_scale=scale, seed=SEED)
        samples, _ = model.generate(torch.arange(10), config, frame_every=10**9)
        _image_row(ax, samples, f"γ = {scale:g}", nrow=10)
    return _save(fig, out / "guidance_strip.png")


def draw_all(
    out: Path,
    runs: Path,
    data_dir: Path | None = None,
    sampling: Mapping[str, SamplingConfig] | None = None,
) -> list[Path]:
    """Draw every figure into `out`; returns the paths written.

    `sampling` maps "time" and "class" to the settings of the figures drawn from the shipped
    models (their seeds and the guidance strip's scales are the figures' own); the default
    is the recipe.
    """
    sampling = sampling or {"time": SamplingConfig(), "class": SamplingConfig()}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror}") from exc
    paths = loss_curves(runs, out)
    paths += denoiser_figures(runs, out, data_dir)
    paths += epoch_samples(runs, out)
    paths.append(epochs_animation(runs, out))
    paths += process_animations(out, sampling)
    paths.append(guidance_strip(out, sampling["class"]))
    return paths
