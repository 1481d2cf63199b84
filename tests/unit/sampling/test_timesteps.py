"""Where the steps fall: trailing and log-SNR spacing, as lists, checked against diffusers."""

from __future__ import annotations

import itertools

import pytest

from diffumnist.config import ConfigError
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling import (
    SamplingConfig,
    all_timesteps,
    logsnr_timesteps,
    sampler_timesteps,
    trailing_timesteps,
    visited_timesteps,
)

T = 300


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(T, 1e-4, 0.02)


def test_the_recipe_visits_every_timestep_from_T_down():
    assert all_timesteps(5) == [5, 4, 3, 2, 1]
    assert all_timesteps(T) == list(range(T, 0, -1))


def test_trailing_spacing():
    assert trailing_timesteps(T, T) == list(range(T, 0, -1))
    assert trailing_timesteps(T, 10) == list(range(300, 0, -30))
    assert trailing_timesteps(T, 1) == [T]
    for steps in (7, 13, 299):
        visited = trailing_timesteps(T, steps)
        assert len(visited) == steps and visited[0] == T and visited[-1] >= 1
        assert all(a > b for a, b in itertools.pairwise(visited))


def test_trailing_spacing_agrees_with_diffusers():
    """diffusers' `timestep_spacing="trailing"`: the same steps, its k being our t − 1."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing"
    )
    for steps in (1, 10, 20, 50, 300):
        scheduler.set_timesteps(steps)
        assert [int(k) + 1 for k in scheduler.timesteps] == trailing_timesteps(T, steps)


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


def test_logsnr_spacing_crowds_the_steps_where_the_noise_is_faint(diffusion):
    logsnr, trailing = logsnr_timesteps(diffusion, 20), trailing_timesteps(T, 20)
    assert sum(t <= 30 for t in logsnr) > sum(t <= 30 for t in trailing)
    assert logsnr[-1] == 1 and trailing[-1] == 15


def test_sampler_timesteps_dispatches_on_the_spacing_and_names_the_valid_ones(diffusion):
    assert sampler_timesteps(diffusion, 20, "trailing") == trailing_timesteps(T, 20)
    assert sampler_timesteps(diffusion, 20, "logsnr") == logsnr_timesteps(diffusion, 20)
    with pytest.raises(ConfigError, match="spacing must be one of trailing, logsnr"):
        sampler_timesteps(diffusion, 20, "karras")


def test_the_visited_timesteps_follow_the_settings(diffusion):
    assert visited_timesteps(SamplingConfig(), diffusion) == all_timesteps(T)
    assert visited_timesteps(SamplingConfig(sampler="dpmpp"), diffusion) == trailing_timesteps(
        T, 20
    )  # dpmpp's default step count
    assert len(visited_timesteps(SamplingConfig(sampler="ddim"), diffusion)) == 50
    logsnr = SamplingConfig(sampler="ddim", steps=12, spacing="logsnr")
    assert visited_timesteps(logsnr, diffusion) == logsnr_timesteps(diffusion, 12)
    short = GaussianDiffusion(10, 1e-4, 0.02)  # the default step count is capped at T
    assert visited_timesteps(SamplingConfig(sampler="dpmpp"), short) == all_timesteps(10)


def test_the_visited_timesteps_refuse_more_steps_than_T():
    short = GaussianDiffusion(20, 1e-4, 0.02)
    with pytest.raises(ConfigError, match=r"1\.\.20") as error:
        visited_timesteps(SamplingConfig(sampler="ddim", steps=21), short)
    assert error.value.setting == "steps"
