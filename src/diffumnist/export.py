"""Weights for sampling or shipping: a checkpoint's chosen weights without training state.

`export_weights` writes the EMA (or raw) weights, optionally in fp16 and with the BatchNorm
statistics measured afresh for those weights (`remeasure_batchnorm`): an EMA copy's stored
statistics were measured on other weights (MODEL_CARD.md measures the difference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffumnist.batchnorm import remeasure_running_statistics
from diffumnist.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from diffumnist.config import ConfigError, TrainConfig, recipe
from diffumnist.data import load_split, to_unit
from diffumnist.kinds import get_kind
from diffumnist.models import DiffusionModel, model_from_weights

# Images per batch when BatchNorm statistics are measured afresh (remeasure_batchnorm).
REMEASURE_BATCH_SIZE = 512


def remeasure_batchnorm(
    model: DiffusionModel,
    data_dir: Path | str | None = None,
    batches: int = 100,
    batch_size: int = REMEASURE_BATCH_SIZE,
    seed: int = 0,
    train_config: TrainConfig | None = None,
) -> None:
    """Measure the BatchNorm running statistics afresh for the weights held now, on
    `batches` random training batches drawn as `train_config`'s training drew them
    (random t and ε, the class dropped with its p_uncond; default: the recipe's); see
    batchnorm.remeasure_running_statistics for why EMA weights need it.

    In fp32, so the statistics do not depend on the machine's bf16 support;
    deterministic for a seed. The network is left in eval mode.
    """
    images, labels = load_split("train", data_dir)
    device = model.device
    train_config = train_config or recipe(model.config.kind)
    generator = torch.Generator().manual_seed(seed)

    def forward() -> None:
        index = torch.randint(len(images), (batch_size,), generator=generator)
        draws = model.kind.draw(batch_size, generator, model.diffusion, train_config)
        draws = {name: value.to(device) for name, value in draws.items()}
        x0 = to_unit(images[index]).to(device)
        model.kind.loss(model.net, x0, labels[index].to(device), draws, model.diffusion,
                       train_config)  # fmt: skip

    remeasure_running_statistics(model.net, forward, batches)
    model.net.eval()


def export_weights(
    source: Path | str,
    target: Path | str,
    *,
    use_ema: bool = True,
    half: bool = False,
    remeasure_batches: int = 0,
    data_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Write a weights-only checkpoint (no optimizer or RNG state) for sampling or shipping;
    returns the metadata written, which records each choice.

    From a training checkpoint, `use_ema` picks the EMA weights (refused if the run kept
    none) or the raw ones; a weights-only file has one set, kept as it is. Floats are stored
    in fp16 if `half` (loaded back as fp32), else fp32. `remeasure_batches` > 0 measures a
    diffusion model's BatchNorm statistics afresh on that many training batches, drawn as
    the run's training drew them (DiffusionModel.remeasure_batchnorm), before writing.
    """
    ckpt = load_checkpoint(source)
    meta = {**ckpt.meta, "storage": "fp16" if half else "fp32"}
    weights = ckpt.weights
    if ckpt.optimizer is not None or ckpt.ema_weights is not None:  # a training checkpoint
        if use_ema and ckpt.ema_weights is None:
            raise CheckpointError(f"{source} holds no EMA weights (--ema-decay 0); use --raw")
        weights = ckpt.ema_weights if use_ema else ckpt.weights
        meta["ema"] = use_ema
    elif not use_ema:
        raise ConfigError(f"{source} holds weights only, one set; --raw picks from a run")
    if remeasure_batches:
        if ckpt.model_config is None or not get_kind(ckpt.model_config.kind).samples:
            raise ConfigError("only time and class models have BatchNorm statistics to remeasure")
        model = model_from_weights(ckpt.model_config, weights)
        train = ckpt.meta.get("train")
        remeasure_batchnorm(
            model,
            data_dir,
            remeasure_batches,
            train_config=TrainConfig.from_dict(train) if train else None,
        )
        weights = model.net.state_dict()
        meta["batchnorm_remeasured"] = {
            "batches": remeasure_batches, "batch_size": REMEASURE_BATCH_SIZE, "precision": "fp32",
        }  # fmt: skip
    cast = torch.float16 if half else torch.float32
    weights = {k: v.to(cast) if v.is_floating_point() else v for k, v in weights.items()}
    save_checkpoint(target, Checkpoint(ckpt.model_config, weights, meta=meta))
    return meta
