"""Sampling: how to draw digits from a trained DDPM, one idea per module.

- settings: `SamplingConfig`, every setting declared once (declarations reads them);
- presets: named settings per model kind, with the figures that chose them;
- timesteps: where the steps fall (trailing, log-SNR), as data;
- solvers: ddpm, ddim and dpmpp, taking the timesteps, each with only its own knobs;
- guidance: classifier-free guidance, autoguidance, the interval, x̂0 clipping, NFE counts;
- limits: what one call may ask for (image size, samples, animation memory);
- pipeline: x_T, the guide, precision, frames and rejection around a solver.

Modules import downwards in that order from the bottom (settings) up (pipeline).
"""

import importlib

from diffumnist.sampling.declarations import NOT_GIVEN
from diffumnist.sampling.limits import MAX_SAMPLES_PER_CALL
from diffumnist.sampling.presets import (
    OWN_TWIN_GUIDANCE,
    PRESET_NAMES,
    PRESET_SUMMARIES,
    PRESETS,
    from_preset,
)
from diffumnist.sampling.settings import (
    DEFAULT_STEPS,
    MAX_DRAWS,
    SAMPLER_NAMES,
    SEED_RANGE,
    SETTING_NAMES,
    SETTINGS,
    SamplerName,
    SamplingConfig,
    SpacingName,
    StartName,
)

# The modules that need torch load on first use, so the CLI reads its arguments without it.
_LAZY = {
    "make_eps_fn": "guidance", "network_evaluations": "guidance",
    "WEAK_GUIDE": "pipeline", "generate": "pipeline", "image_size": "limits",
    "load_guide": "pipeline", "mean_images": "pipeline",
    "SAMPLERS": "solvers", "EpsFn": "solvers", "Solver": "solvers", "StepCallback": "solvers",
    "StepInfo": "solvers", "ddim_sample": "solvers", "ddpm_sample": "solvers",
    "dpmpp_sample": "solvers", "get_sampler": "solvers",
    "all_timesteps": "timesteps", "logsnr_timesteps": "timesteps",
    "sampler_timesteps": "timesteps", "trailing_timesteps": "timesteps",
    "visited_timesteps": "timesteps",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffumnist.sampling' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffumnist.sampling.{_LAZY[name]}"), name)


__all__ = [
    "DEFAULT_STEPS", "MAX_DRAWS", "MAX_SAMPLES_PER_CALL", "NOT_GIVEN", "OWN_TWIN_GUIDANCE",
    "PRESETS", "PRESET_NAMES",
    "PRESET_SUMMARIES", "SAMPLERS", "SAMPLER_NAMES", "SEED_RANGE", "SETTINGS", "SETTING_NAMES",
    "WEAK_GUIDE", "EpsFn", "SamplerName", "SamplingConfig", "Solver", "SpacingName",
    "StartName", "StepCallback", "StepInfo", "all_timesteps", "ddim_sample", "ddpm_sample",
    "dpmpp_sample", "from_preset", "generate", "get_sampler", "image_size", "load_guide",
    "logsnr_timesteps", "make_eps_fn", "mean_images", "network_evaluations",
    "sampler_timesteps", "trailing_timesteps", "visited_timesteps",
]  # fmt: skip
