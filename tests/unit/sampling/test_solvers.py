"""The fast samplers: agreement with diffusers, the paper's identities, and the shared API."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffumnist.config import ConfigError
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling import (
    SAMPLER_NAMES,
    SAMPLERS,
    StepInfo,
    ddim_sample,
    ddpm_sample,
    dpmpp_sample,
    get_sampler,
    logsnr_timesteps,
    sampler_timesteps,
    trailing_timesteps,
)

T = 300
SHAPE = (3, 1, 28, 28)


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(T, 1e-4, 0.02)


def oracle_eps_fn(diffusion: GaussianDiffusion, record: list[torch.Tensor] | None = None):
    """An imperfect ε oracle: the true noise towards fixed images, perturbed per timestep.

    It keeps trajectories in the data's range as a trained network does, and is a pure
    function of (x_t, t), so both implementations can be fed exactly the same predictions.
    """
    x0_target = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        step = t
        wobble = torch.randn(SHAPE, generator=torch.Generator().manual_seed(step))
        eps = diffusion.predict_eps_from_x0(x_t, t, x0_target) + 0.1 * wobble
        if record is not None:
            record.append(eps)
        return eps

    return eps_fn


def run_ours(sampler, diffusion, steps, eta=0.0, seed=1, spacing="trailing"):
    """Run one of our samplers on the oracle; return (x_T, ε per step, StepInfo per step)."""
    eps_seen: list[torch.Tensor] = []
    infos: list[StepInfo] = []
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(123))
    sampler(
        oracle_eps_fn(diffusion, eps_seen), x_T, diffusion, torch.Generator().manual_seed(seed),
        infos.append, steps=steps, eta=eta, spacing=spacing,
    )  # fmt: skip
    return x_T, eps_seen, infos


def diffusers_scheduler(
    name: str, steps: int, algorithm: str = "dpmsolver++", timesteps: list[int] | None = None
):
    """diffusers configured to our schedule: linear 1e-4 → 0.02, T = 300, trailing, no clip;
    `timesteps` (ours, 1 … T) replaces the trailing ones (DPM-Solver++ only)."""
    diffusers = pytest.importorskip("diffusers")
    common = dict(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        prediction_type="epsilon", timestep_spacing="trailing",
    )  # fmt: skip
    if name == "ddim":
        scheduler = diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    else:
        scheduler = diffusers.DPMSolverMultistepScheduler(
            **common, algorithm_type=algorithm, solver_order=2, solver_type="midpoint",
            thresholding=False, final_sigmas_type="zero",
        )  # fmt: skip
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=[t - 1 for t in timesteps])
        return scheduler
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == [t - 1 for t in trailing_timesteps(T, steps)]
    return scheduler


# Tolerance: diffusers builds betas by a float32 linspace and ᾱ by a float32 cumprod, so
# its 1 − ᾱ_t is off by up to 4e-5 relative at small t; ours rounds the float64 schedule
# once. Fed the same ε, the trajectories differ by at most 3e-5 (DDIM, η = 1, 300 steps).
ATOL = RTOL = 1e-4


# diffusers' DDIM steps back by T // steps, so it follows trailing spacing only when the
# number of steps divides T; ours steps to the next spaced timestep for any number.
@pytest.mark.parametrize(("steps", "eta"), [(1, 0.0), (10, 0.0), (50, 0.0), (300, 0.0),
                                            (20, 0.5), (300, 1.0)])  # fmt: skip
def test_ddim_agrees_with_diffusers(diffusion, steps, eta):
    x, eps_seen, infos = run_ours(ddim_sample, diffusion, steps, eta, seed=7)
    scheduler = diffusers_scheduler("ddim", steps)
    noise_source = torch.Generator().manual_seed(7)  # ours draws one N(0, I) per step
    for i, k in enumerate(scheduler.timesteps):
        noise = torch.randn(SHAPE, generator=noise_source) if eta > 0 else None
        out = scheduler.step(eps_seen[i], int(k), x, eta=eta, variance_noise=noise)
        assert infos[i].t == int(k) + 1
        torch.testing.assert_close(infos[i].x0_pred, out.pred_original_sample, atol=ATOL,
                                   rtol=RTOL, msg=f"x̂0 differs at step {i}")  # fmt: skip
        torch.testing.assert_close(infos[i].x_prev, out.prev_sample, atol=ATOL, rtol=RTOL,
                                   msg=f"x_prev differs at step {i}")  # fmt: skip
        x = out.prev_sample
    assert x.abs().max() < 3


# 40 steps puts timesteps on exact halves (292.5 → 292): both round half to even. diffusers
# makes 8 steps when asked for 7 (a float arange), so 7 is not compared.
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 15, 20, 40, 100, 300])
def test_dpmpp_agrees_with_diffusers(diffusion, steps):
    x, eps_seen, infos = run_ours(dpmpp_sample, diffusion, steps)
    scheduler = diffusers_scheduler("dpmpp", steps)
    for i, k in enumerate(scheduler.timesteps):
        x = scheduler.step(eps_seen[i], k, x).prev_sample
        assert infos[i].t == int(k) + 1
        torch.testing.assert_close(infos[i].x_prev, x, atol=ATOL, rtol=RTOL,
                                   msg=f"x_prev differs at step {i}")  # fmt: skip
    assert x.abs().max() < 3


@pytest.mark.parametrize("steps", [1, 2, 10, 20, 40])
def test_dpmpp_sde_agrees_with_diffusers(diffusion, steps):
    """η = 1 is diffusers' sde-dpmsolver++ (2M, midpoint), fed the same noise per step."""
    x, eps_seen, infos = run_ours(dpmpp_sample, diffusion, steps, eta=1.0, seed=9)
    scheduler = diffusers_scheduler("dpmpp", steps, algorithm="sde-dpmsolver++")
    noise_source = torch.Generator().manual_seed(9)  # ours draws one N(0, I) per step but the last
    for i, k in enumerate(scheduler.timesteps):
        noise = torch.randn(SHAPE, generator=noise_source) if i < steps - 1 else None
        x = scheduler.step(eps_seen[i], k, x, variance_noise=noise).prev_sample
        torch.testing.assert_close(infos[i].x_prev, x, atol=ATOL, rtol=RTOL,
                                   msg=f"x_prev differs at step {i}")  # fmt: skip
    assert x.abs().max() < 3


def test_dpmpp_eta_zero_is_the_ode_bit_for_bit(diffusion):
    *_, ode = run_ours(dpmpp_sample, diffusion, steps=12)
    *_, eta_zero = run_ours(dpmpp_sample, diffusion, steps=12, eta=0.0, seed=99)
    *_, sde = run_ours(dpmpp_sample, diffusion, steps=12, eta=0.5)
    assert all(torch.equal(a.x_prev, b.x_prev) for a, b in zip(ode, eta_zero, strict=True))
    assert not torch.equal(ode[-1].x_prev, sde[-1].x_prev)


def test_dpmpp_last_step_returns_the_data_prediction(diffusion):
    """At σ_0 = 0 the update is x̂0 itself (h = ∞)."""
    *_, infos = run_ours(dpmpp_sample, diffusion, steps=5)
    assert torch.equal(infos[-1].x_prev, infos[-1].x0_pred)


def test_dpmpp_first_order_step_is_ddim(diffusion):
    """With two steps DPM-Solver++ never uses its multistep term: both steps are DDIM's."""
    *_, ddim = run_ours(ddim_sample, diffusion, steps=2)
    *_, dpmpp = run_ours(dpmpp_sample, diffusion, steps=2)
    for ours, theirs in zip(dpmpp, ddim, strict=True):
        torch.testing.assert_close(ours.x_prev, theirs.x_prev, atol=1e-5, rtol=1e-5)


# diffusers' `use_lu_lambdas` picks the timesteps nearest to the even log-SNR points too, but
# keeps repeats near t = 1 (20 steps: ..., 4, 2, 2, 1); ours push such steps up to distinct
# timesteps, which may move the steps before them up too (40 steps: from the 26th on).
@pytest.mark.parametrize("steps", [2, 5, 10, 20, 40])
def test_logsnr_spacing_agrees_with_diffusers_lu_lambdas(diffusion, steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        use_lu_lambdas=True, final_sigmas_type="zero",
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    theirs = [int(k) + 1 for k in scheduler.timesteps]
    ours = logsnr_timesteps(diffusion, steps)
    if len(set(theirs)) == steps:
        assert ours == theirs
    assert ours[: steps // 2] == theirs[: steps // 2]
    assert all(a >= b for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 40, 150, 299, 300])
def test_logsnr_spacing_visits_distinct_steps_from_T_to_1(diffusion, steps):
    visited = logsnr_timesteps(diffusion, steps)
    assert len(visited) == steps and visited[0] == T
    assert all(a > b for a, b in itertools.pairwise(visited))
    assert visited[-1] == (1 if steps > 1 else T)
    if steps == T:
        assert visited == list(range(T, 0, -1))


@pytest.mark.parametrize(("steps", "eta"), [(10, 0.0), (20, 0.0), (20, 1.0)])
def test_dpmpp_on_logsnr_steps_agrees_with_diffusers(diffusion, steps, eta):
    """Fed our log-SNR timesteps, diffusers' DPM-Solver++ (2M; SDE at η = 1) takes the
    same uneven steps: the multistep ratio r = h_prev/h is not 1 where rounding moved one."""
    x, eps_seen, infos = run_ours(dpmpp_sample, diffusion, steps, eta=eta, seed=5,
                                  spacing="logsnr")  # fmt: skip
    visited = logsnr_timesteps(diffusion, steps)
    assert [info.t for info in infos] == visited
    algorithm = "sde-dpmsolver++" if eta else "dpmsolver++"
    scheduler = diffusers_scheduler("dpmpp", steps, algorithm, timesteps=visited)
    noise_source = torch.Generator().manual_seed(5)
    for i, k in enumerate(scheduler.timesteps):
        noise = torch.randn(SHAPE, generator=noise_source) if eta and i < steps - 1 else None
        x = scheduler.step(eps_seen[i], k, x, variance_noise=noise).prev_sample
        torch.testing.assert_close(infos[i].x_prev, x, atol=ATOL, rtol=RTOL,
                                   msg=f"x_prev differs at step {i}")  # fmt: skip


def test_trailing_spacing():
    assert trailing_timesteps(T, T) == list(range(T, 0, -1))
    assert trailing_timesteps(T, 10) == list(range(300, 0, -30))
    assert trailing_timesteps(T, 1) == [T]
    for steps in (7, 13, 299):
        visited = trailing_timesteps(T, steps)
        assert len(visited) == steps and visited[0] == T and visited[-1] >= 1
        assert all(a > b for a, b in itertools.pairwise(visited))


def test_ddim_eta_one_at_full_steps_samples_the_posterior():
    """η = 1, steps = T: x_{t−1} = μ̃_t(x̂0, x_t) + √β̃_t·z (Eq. 7), not the recipe's √β_t·z."""
    small = GaussianDiffusion(20, 1e-4, 0.02)
    eps_fn = oracle_eps_fn(small)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    ddim: list[StepInfo] = []
    ddim_sample(eps_fn, x_T, small, torch.Generator().manual_seed(4), ddim.append, steps=20, eta=1)
    betas, ab = small.betas.double(), small.alphas_cumprod.double()
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    posterior_variance = (betas * (1 - ab_prev) / (1 - ab)).float()
    noise_source, x_t = torch.Generator().manual_seed(4), x_T
    for info, t in zip(ddim, range(20, 0, -1), strict=True):
        x0_pred = small.predict_x0_from_eps(x_t, t, eps_fn(x_t, t))
        noise = torch.randn(SHAPE, generator=noise_source)
        x_t = small.q_posterior_mean(x0_pred, x_t, t) + posterior_variance[t - 1].sqrt() * noise
        torch.testing.assert_close(info.x_prev, x_t, atol=1e-5, rtol=1e-5, msg=f"t={t}")
    # DDPM from the same x_T and noise differs in its first step by (√β_T − √β̃_T)·z.
    ddpm: list[StepInfo] = []
    ddpm_sample(eps_fn, x_T, small, torch.Generator().manual_seed(4), ddpm.append)
    first_noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    gap = (betas[-1].sqrt() - posterior_variance[-1].double().sqrt()).item()
    assert gap > 1e-3
    torch.testing.assert_close(ddpm[0].x_prev - ddim[0].x_prev, gap * first_noise)


@pytest.mark.parametrize("sampler", [ddim_sample, dpmpp_sample])
def test_deterministic_samplers_ignore_the_generator(sampler):
    small = GaussianDiffusion(20, 1e-4, 0.02)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    a = sampler(oracle_eps_fn(small), x_T, small, generator, steps=8)
    b = sampler(oracle_eps_fn(small), x_T, small, torch.Generator().manual_seed(2), steps=8)
    assert torch.equal(a, b)
    assert torch.equal(generator.get_state(), state)  # no noise was drawn


@pytest.mark.parametrize(("name", "steps", "spacing"), [
    ("ddpm", None, "trailing"), ("ddim", 7, "trailing"), ("ddim", 20, "trailing"),
    ("dpmpp", 1, "trailing"), ("dpmpp", 6, "trailing"), ("ddim", 7, "logsnr"),
    ("dpmpp", 6, "logsnr"),
])  # fmt: skip
def test_callback_fires_once_per_step(name, steps, spacing):
    small = GaussianDiffusion(20, 1e-4, 0.02)
    infos: list[StepInfo] = []
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    eta = 0.3 if name == "ddim" else 0.0
    x0 = SAMPLERS[name](oracle_eps_fn(small), x_T, small, torch.Generator().manual_seed(0),
                        infos.append, steps=steps, eta=eta, spacing=spacing)  # fmt: skip
    expected = steps or 20
    assert [info.step for info in infos] == list(range(expected))
    assert all(info.num_steps == expected for info in infos)
    assert [info.t for info in infos] == sampler_timesteps(small, expected, spacing)
    if spacing == "logsnr":
        assert infos[-1].t == 1 and infos[-1].t != trailing_timesteps(20, expected)[-1]
    assert torch.equal(infos[0].x_t, x_T) and torch.equal(infos[-1].x_prev, x0)
    for before, after in itertools.pairwise(infos):
        assert torch.equal(before.x_prev, after.x_t)


@pytest.mark.parametrize(
    ("name", "steps", "eta"),
    [("ddpm", None, 0.0), ("ddim", 5, 0.0), ("ddim", 5, 1.0), ("dpmpp", 5, 0.0)],
)
def test_every_sampler_runs_the_guided_class_model(tiny_class_model, name, steps, eta):
    c = torch.tensor([0, 7])
    kwargs = dict(guidance_scale=5.0, sampler=name, steps=steps, eta=eta)
    samples, animation = tiny_class_model.sample(c, seed=3, **kwargs)
    again, _ = tiny_class_model.sample(c, seed=3, **kwargs)
    assert samples.shape == (2, 1, 28, 28) and torch.isfinite(samples).all()
    assert animation.shape[0] == 1 + (steps or tiny_class_model.config.num_timesteps)
    assert torch.equal(samples, again)


def test_fast_samplers_default_to_few_steps_capped_at_T(tiny_class_model):
    seen: list[int] = []
    tiny_class_model.sample([1], sampler="dpmpp", callback=lambda info: seen.append(info.t))
    assert len(seen) == min(20, tiny_class_model.config.num_timesteps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "euler"},
        {"sampler": "DDIM"},
        {"sampler": "ddpm", "steps": 10},
        {"sampler": "ddim", "steps": 0},
        {"sampler": "ddim", "steps": 21},
        {"sampler": "dpmpp", "steps": -3},
        {"sampler": "dpmpp", "steps": 2.5},
        {"sampler": "dpmpp", "steps": True},
        {"sampler": "ddim", "steps": 5, "eta": -0.1},
        {"sampler": "ddim", "steps": 5, "eta": 1.5},
        {"sampler": "ddim", "steps": 5, "eta": math.nan},
        {"sampler": "dpmpp", "steps": 5, "eta": 1.5},  # dpmpp takes η in [0, 1] (its SDE)
        {"sampler": "ddpm", "eta": 1.0},
    ],
)
def test_bad_sampler_requests_are_clear_errors(tiny_class_model, kwargs):
    with pytest.raises(ConfigError) as error:
        tiny_class_model.sample([1], **kwargs)
    assert "\n" not in str(error.value)


def test_a_bad_name_lists_the_valid_ones(tiny_class_model):
    with pytest.raises(ConfigError, match="ddpm, ddim, dpmpp"):
        get_sampler("plms")
    with pytest.raises(ConfigError, match="ddpm, ddim, dpmpp"):
        tiny_class_model.sample([1], sampler="plms")
    assert SAMPLER_NAMES == tuple(SAMPLERS) == ("ddpm", "ddim", "dpmpp")


def test_the_samplers_reject_bad_steps_when_called_directly():
    small = GaussianDiffusion(20, 1e-4, 0.02)
    x_T = torch.zeros(SHAPE)
    for sampler in SAMPLERS.values():
        with pytest.raises(ConfigError, match=r"1\.\.20|None or 20"):
            sampler(oracle_eps_fn(small), x_T, small, torch.Generator(), steps=21)
