"""How to sample: every setting declared once, as one field of `SamplingConfig`.

A field's type, default and help are all the package needs: the CLI's flags, the page's
Advanced controls (/api/info), `model.sample`'s keywords and `describe()` come from `SETTINGS`:

    probe_knob: float = dataclasses.field(default=0.25, metadata={"help": "..."})

is a new setting everywhere. Optional metadata: `label` (the page's name), `min`/`max`
(inclusive; open with `exclusive`), `samplers` (where it applies; elsewhere it must stay at
its default), `none` (what None means, for a `X | None` field), `refs` (papers, for the page),
`shown` (how describe() writes it), `page` (False keeps it off the page).

`NOT_GIVEN` means "not given" on every surface: the preset's value stands. None is a value:
for a `X | None` setting it switches the preset's value off; other settings refuse it.
This module imports no torch, so the CLI checks its arguments before the heavy imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from diffumnist.config import ConfigError, Precision
from diffumnist.sampling.declarations import NOT_GIVEN, Setting, read_settings

SamplerName = Literal["ddpm", "ddim", "dpmpp"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
StartName = Literal["noise", "mean"]
SpacingName = Literal["trailing", "logsnr"]
# Steps a fast sampler takes when `steps` is None (capped at T); ddpm always takes all T.
DEFAULT_STEPS: dict[str, int] = {"ddim": 50, "dpmpp": 20}
# Draws per digit at most with `reject_below` (the first and up to MAX_DRAWS - 1 redraws).
MAX_DRAWS = 10
# Evaluation derives per-batch seeds as seed * 1_000_003 + batch: far inside 64 bits.
SEED_RANGE = range(2**32)
FAST_SAMPLERS = ("ddim", "dpmpp")


def _paper(title: str, arxiv: str) -> dict[str, str]:
    return {"title": title, "url": f"https://arxiv.org/abs/{arxiv}"}


def setting(default: Any, help_text: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **meta})


@dataclass(frozen=True)
class SamplingConfig:
    """How to draw samples from a DDPM; the defaults are the recipe (DDPM, all T, γ = 5).

    Each field is checked alone when made, and together with the others by `check`, the one
    place for checks that involve several settings, the model's T or the image size.
    """

    sampler: SamplerName = setting(
        "ddpm",
        "How each step is taken: ddpm is the recipe's T small random steps; ddim and "
        "dpmpp are faster solvers that take 20 to 50 larger steps.",
        refs=[
            _paper("DDPM, Ho et al. 2020", "2006.11239"),
            _paper("DDIM, Song et al. 2021", "2010.02502"),
            _paper("DPM-Solver++, Lu et al. 2022", "2211.01095"),
        ],
    )
    steps: int | None = setting(
        None,
        "How many steps ddim and dpmpp take; ddpm always takes all T.",
        min=1,
        none=f"the sampler's default: {DEFAULT_STEPS['ddim']} for ddim, "
        f"{DEFAULT_STEPS['dpmpp']} for dpmpp",
        shown="{} steps",
    )
    eta: float = setting(
        0.0,
        "How much fresh noise ddim and dpmpp add at each step: 0 draws none (the same "
        "start always gives the same digit), 1 is fully random and corrects more errors.",
        label="Noise η",
        min=0,
        max=1,
        samplers=FAST_SAMPLERS,
        shown="η = {:g}",
    )
    spacing: SpacingName = setting(
        "trailing",
        "Where the steps of ddim and dpmpp fall: trailing spaces them evenly in "
        "time; logsnr puts more of them near the end, where the last details form.",
        samplers=FAST_SAMPLERS,
        shown="{} spacing",
        refs=[
            _paper("Common diffusion schedules are flawed, Lin et al. 2024", "2305.08891"),
            _paper("DPM-Solver, Lu et al. 2022", "2206.00927"),
        ],
    )
    guidance_scale: float = setting(
        5.0,
        "How hard each step is pushed towards the model's own idea of the digit, away "
        "from the guide: 1 is the model alone, larger is bolder and less varied.",
        label="Guidance scale γ",
        min=0,
        refs=[_paper("Classifier-free guidance, Ho & Salimans 2022", "2207.12598")],
    )
    guidance_interval: tuple[int, int] | None = setting(
        None,
        "Guide only while the noise level t lies in (LO, HI]; t counts from 1 (almost "
        "clean) to T (pure noise). Other steps use the model alone and cost half as much.",
        label="Guide only for t in",
        none="every step",
        refs=[_paper("Guidance in a limited interval, Kynkäänniemi et al. 2024", "2404.07724")],
    )
    guide: str | None = setting(
        None,
        "What guidance pushes away from: by default the class model's guess without a "
        "digit; 'weak' is a briefly trained twin of the model, which needs no classes.",
        none="the model's own unconditional guess",
        refs=[_paper("Autoguidance, Karras et al. 2024", "2406.02507")],
    )
    start: StartName = setting(
        "noise",
        "Where sampling starts: noise is pure random noise, as in the recipe; mean "
        "starts from noise over the average image of the digit, as training saw it.",
        shown={"mean": "from the mean digit"},
        refs=[_paper("Signal leak, Everaert et al. 2024", "2309.15842")],
    )
    clip_x0: bool = setting(
        False,
        "Keep each step's guess of the clean image within black and white.",
        label="Clip the clean guess",
        shown={True: "x̂0 clipped"},
    )
    reject_below: float | None = setting(
        None,
        "Redraw any digit the shipped reader recognises with less than this "
        f"probability, up to {MAX_DRAWS} tries, keeping the clearest; 28x28 images only.",
        label="Redraw below",
        min=0,
        max=1,
        exclusive=True,
        none="keep every draw",
        shown="redrawn below p = {:g}",
    )
    seed: int = setting(
        0,
        "Seed of the random noise: the same seed gives the same digits.",
        min=0,
        max=SEED_RANGE.stop - 1,
        shown="seed {}",
    )
    precision: Precision = setting(
        "auto",
        "auto = bf16 where the hardware runs it natively, else fp32.",
        page=False,
        shown="{}",
    )

    def __post_init__(self) -> None:
        for spec in SETTINGS:
            value = spec.checked(getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        self.check()

    def check(self, num_timesteps: int | None = None, image_size: tuple[int, int] = (28, 28)):
        """Every check that involves more than one setting, the model's T or the image size
        (width, height); a ConfigError naming the setting at fault."""
        for spec in SETTINGS:
            value = getattr(self, spec.name)
            if spec.samplers and self.sampler not in spec.samplers and value != spec.default:
                raise ConfigError(
                    f"{spec.name} applies to the {' and '.join(spec.samplers)} samplers; got "
                    f"{spec.name}={value!r} for {self.sampler}",
                    spec.name,
                )
        if self.reject_below is not None and image_size != (28, 28):
            raise ConfigError(
                f"reject_below reads 28x28 digits only (the filter's size); got "
                f"{image_size[0]}x{image_size[1]} (reject_below=None keeps every draw)",
                "reject_below",
            )
        if num_timesteps is None:
            return
        T = num_timesteps
        if self.guidance_interval is not None and self.guidance_interval[1] > T:
            raise ConfigError(
                f"guidance_interval must lie within 0..{T} (T); got {list(self.guidance_interval)}",
                "guidance_interval",
            )
        if self.sampler == "ddpm" and self.steps not in (None, T):
            raise ConfigError(
                f"ddpm always takes all T={T} steps; steps must be None or {T} "
                f"(ddim and dpmpp take fewer); got {self.steps!r}",
                "steps",
            )
        if self.steps is not None and self.steps > T:
            raise ConfigError(f"steps must be an integer in 1..{T}; got {self.steps}", "steps")

    def num_steps(self, num_timesteps: int) -> int:
        """The steps this config takes with a model of T = `num_timesteps` (checked)."""
        self.check(num_timesteps)
        if self.sampler == "ddpm":
            return num_timesteps
        return self.steps or min(DEFAULT_STEPS[self.sampler], num_timesteps)

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with `changes` (NOT_GIVEN ones ignored); a new sampler resets the settings
        that apply to some samplers only, and the step count."""
        changes = {name: value for name, value in changes.items() if value is not NOT_GIVEN}
        if unknown := sorted(set(changes) - SETTING_NAMES):
            raise ConfigError(
                f"unknown sampling setting(s): {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(SETTING_NAMES))}",
                unknown[0],
            )
        if changes.get("sampler", self.sampler) != self.sampler:
            reset = {s.name: s.default for s in SETTINGS if s.samplers or s.name == "steps"}
            changes = reset | changes
        return dataclasses.replace(self, **changes)

    def describe(self, with_seed: bool = True, guided: bool = True) -> str:
        """One line for people, e.g. 'dpmpp 20 steps, γ = 5 for 30 < t <= 180, seed 0';
        `guided` False leaves out γ, which a model without classes or guide ignores."""
        parts = [self.sampler + (f" {self.steps} steps" if self.steps else "")]
        if guided or self.guide is not None:
            parts.append(f"γ = {self.guidance_scale:g}")
            if self.guidance_interval is not None:
                parts[-1] += " for {} < t <= {}".format(*self.guidance_interval)
            if self.guide is not None:
                parts[-1] += f" from the {self.guide} guide"
        composed = {"sampler", "steps", "guidance_scale", "guidance_interval", "guide"}
        for spec in SETTINGS:
            value = getattr(self, spec.name)
            if (spec.name == "seed" and with_seed) or (
                spec.name not in composed | {"seed"} and value != spec.default
            ):
                parts.append(spec.shown(value))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.guidance_interval is not None:
            data["guidance_interval"] = list(self.guidance_interval)
        return data


SETTINGS: tuple[Setting, ...] = read_settings(SamplingConfig)
SETTING_NAMES: frozenset[str] = frozenset(spec.name for spec in SETTINGS)
