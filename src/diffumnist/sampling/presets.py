"""Named sampling settings (`--preset`, `model.sample(preset=...)`) for each kind that samples.

recipe is the original project's sampler. fast and best were chosen by the quality map
(benchmarks/quality_map.py; docs/quality.md has its tables). The class model needs no
guidance for legible digits: the SDE from the mean digit comes closest to real ones, and the
filter redraws the few it cannot read. The time model, which has no classes, is guided by its
weak twin at high noise only (t > 100), on log-SNR steps, and the filter redraws what it reads
as no digit in particular; its `best` guides harder, which buys precision with some FID.
The class model offers no `best`: nothing measured beat its `fast` on both counts.
"""

from __future__ import annotations

from typing import Any

from diffumnist.config import ConfigError, check_choice
from diffumnist.sampling.settings import SamplingConfig

# MNIST-FID 2.20 ± 0.21, guided accuracy >= 0.9991, 22 NFE (class, n = 10,000, seeds 0-2)
_LEGIBLE = SamplingConfig(
    sampler="dpmpp", steps=20, eta=1.0, guidance_scale=1.0, start="mean", reject_below=0.97
)
# time_e34 at n = 10,000, seeds 0-2: fast MNIST-FID 3.45 ± 0.34, precision >= 0.853;
# best 5.79 ± 0.33, precision >= 0.868; about 30 NFE with redraws
_TIME_GUIDED = SamplingConfig(
    sampler="dpmpp",
    steps=20,
    eta=1.0,
    spacing="logsnr",
    guidance_scale=1.5,
    guidance_interval=(100, 300),
    guide="weak",
    start="mean",
    reject_below=0.97,
)
PRESETS: dict[str, dict[str, SamplingConfig]] = {
    "class": {"recipe": SamplingConfig(), "fast": _LEGIBLE},
    "time": {
        "recipe": SamplingConfig(),
        "fast": _TIME_GUIDED,
        "best": _TIME_GUIDED.replace(guidance_scale=1.75),
    },
}
PRESET_NAMES: tuple[str, ...] = ("recipe", "fast", "best")
# What to add to a preset to guide a model by the weak twin its own run kept (the fast
# training preset keeps one after epoch 1: TrainConfig.twin_epoch): the guide itself, and
# for the class model, whose `fast` does not guide, how hard and where (docs/training.md:
# its 3 epochs from MNIST-FID 3.03 to 2.81 over seeds 0-2; the time model's 7.82 → 6.03).
OWN_TWIN_GUIDANCE: dict[str, dict[str, Any]] = {
    "time": {},
    "class": {"guidance_scale": 1.5, "guidance_interval": (100, 300)},
}
# One plain sentence per preset, for the page and `--help`.
PRESET_SUMMARIES: dict[str, dict[str, str]] = {
    "class": {
        "recipe": "The original project's sampler: 300 small steps with strong guidance "
        "(about 20 s for ten digits on a laptop CPU).",
        "fast": "20 larger steps from the average digit; any digit the reader cannot "
        "recognise is redrawn. Closest to real handwriting, and the quickest.",
    },
    "time": {
        "recipe": "The original project's sampler: 300 small steps from pure noise.",
        "fast": "20 steps, nudged by a weaker twin of the model while the noise is strong; "
        "shapes the reader cannot recognise are redrawn.",
        "best": "As fast, nudged harder: fewer odd shapes, a little less variety.",
    },
}


def from_preset(preset: str, kind: str, **overrides: Any) -> SamplingConfig:
    """The preset called `preset` for a model of `kind`, with the `overrides` given winning
    over its values (NOT_GIVEN ones ignored; None switches a preset's value off)."""
    check_choice("model kind", kind, tuple(PRESETS))
    check_choice("preset", preset, PRESET_NAMES)
    if preset not in PRESETS[kind]:
        offered = ", ".join(PRESETS[kind])
        raise ConfigError(
            f"the {kind} model offers the presets {offered}; got {preset!r}", "preset"
        )
    return PRESETS[kind][preset].replace(**overrides)
