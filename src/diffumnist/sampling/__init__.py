"""Sampling: how to draw digits from a trained DDPM, one idea per module.

- settings: `SamplingConfig`, every setting declared once (declarations reads them);
- presets: named settings per model kind, with the figures that chose them;
- timesteps: where the steps fall (trailing, log-SNR), as data;
- solvers: ddpm, ddim and dpmpp, taking the timesteps, each with only its own knobs;
- guidance: classifier-free guidance, autoguidance, the interval, x̂0 clipping, NFE counts;
- pipeline: x_T, the guide, precision, frames and rejection around a solver.

Modules import downwards in that order from the bottom (settings) up (pipeline).
"""

from diffumnist.sampling.guidance import make_eps_fn, network_evaluations
from diffumnist.sampling.pipeline import (
    MAX_SAMPLES_PER_CALL,
    WEAK_GUIDE,
    generate,
    image_size,
    load_guide,
    mean_images,
)
from diffumnist.sampling.presets import PRESET_NAMES, PRESET_SUMMARIES, PRESETS, from_preset
from diffumnist.sampling.settings import (
    DEFAULT_STEPS,
    MAX_DRAWS,
    NOT_GIVEN,
    SAMPLER_NAMES,
    SEED_RANGE,
    SETTING_NAMES,
    SETTINGS,
    SamplerName,
    SamplingConfig,
    SpacingName,
    StartName,
)
from diffumnist.sampling.solvers import (
    SAMPLERS,
    EpsFn,
    Solver,
    StepCallback,
    StepInfo,
    ddim_sample,
    ddpm_sample,
    dpmpp_sample,
    get_sampler,
)
from diffumnist.sampling.timesteps import (
    all_timesteps,
    logsnr_timesteps,
    sampler_timesteps,
    trailing_timesteps,
    visited_timesteps,
)

__all__ = [
    "DEFAULT_STEPS", "MAX_DRAWS", "MAX_SAMPLES_PER_CALL", "NOT_GIVEN", "PRESETS", "PRESET_NAMES",
    "PRESET_SUMMARIES", "SAMPLERS", "SAMPLER_NAMES", "SEED_RANGE", "SETTINGS", "SETTING_NAMES",
    "WEAK_GUIDE", "EpsFn", "SamplerName", "SamplingConfig", "Solver", "SpacingName",
    "StartName", "StepCallback", "StepInfo", "all_timesteps", "ddim_sample", "ddpm_sample",
    "dpmpp_sample", "from_preset", "generate", "get_sampler", "image_size", "load_guide",
    "logsnr_timesteps", "make_eps_fn", "mean_images", "network_evaluations",
    "sampler_timesteps", "trailing_timesteps", "visited_timesteps",
]  # fmt: skip
