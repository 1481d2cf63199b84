"""The solvers: agreement with diffusers, the papers' identities, and the shared signature.

Each solver takes the timesteps it visits as a list (timesteps.py makes them) and only its
own knobs; an ε oracle stands in for the network, so no model is needed.
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

from diffumnist.config import ConfigError
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling import (
    SAMPLER_NAMES,
    SAMPLERS,
    StepInfo,
    all_timesteps,
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
    """Run one of our fast solvers on the oracle over `steps` steps spaced by `spacing`;
    return (x_T, ε per step, StepInfo per step)."""
    eps_seen: list[torch.Tensor] = []
    infos: list[StepInfo] = []
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(123))
    timesteps = sampler_timesteps(diffusion, steps, spacing)
    sampler(
        oracle_eps_fn(diffusion, eps_seen), x_T, diffusion, timesteps,
        torch.Generator().manual_seed(seed), infos.append, eta=eta,
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


def test_ddim_eta_one_at_full_steps_samples_the_posterior():
    """η = 1, steps = T: x_{t−1} = μ̃_t(x̂0, x_t) + √β̃_t·z (Eq. 7), not the recipe's √β_t·z."""
    small = GaussianDiffusion(20, 1e-4, 0.02)
    eps_fn = oracle_eps_fn(small)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    every = all_timesteps(20)
    ddim: list[StepInfo] = []
    ddim_sample(eps_fn, x_T, small, every, torch.Generator().manual_seed(4), ddim.append, eta=1)
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
    ddpm_sample(eps_fn, x_T, small, every, torch.Generator().manual_seed(4), ddpm.append)
    first_noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    gap = (betas[-1].sqrt() - posterior_variance[-1].double().sqrt()).item()
    assert gap > 1e-3
    torch.testing.assert_close(ddpm[0].x_prev - ddim[0].x_prev, gap * first_noise)


def test_the_ddpm_step_is_algorithm_2_of_ho_et_al():
    """x_{t−1} = 1/√α_t·(x_t − β_t/√(1 − ᾱ_t)·ε) + √β_t·z, and x_0 from t = 1 adds no noise."""
    small = GaussianDiffusion(10, 1e-4, 0.02)
    eps_fn = oracle_eps_fn(small)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    x0 = ddpm_sample(eps_fn, x_T, small, all_timesteps(10), torch.Generator().manual_seed(4))
    betas, alphas_cumprod = small.betas.double(), small.alphas_cumprod.double()
    noise_source, x_t = torch.Generator().manual_seed(4), x_T.double()
    for t in range(10, 0, -1):
        eps, z = eps_fn(x_t.float(), t).double(), torch.randn(SHAPE, generator=noise_source)
        beta, alpha_cumprod = betas[t - 1], alphas_cumprod[t - 1]
        x_t = (x_t - beta / (1 - alpha_cumprod).sqrt() * eps) / (1 - beta).sqrt()
        if t > 1:
            x_t = x_t + beta.sqrt() * z.double()
    torch.testing.assert_close(x0, x_t.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler", [ddim_sample, dpmpp_sample])
def test_deterministic_samplers_ignore_the_generator(sampler):
    small = GaussianDiffusion(20, 1e-4, 0.02)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    timesteps = trailing_timesteps(20, 8)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    a = sampler(oracle_eps_fn(small), x_T, small, timesteps, generator)
    b = sampler(oracle_eps_fn(small), x_T, small, timesteps, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert torch.equal(generator.get_state(), state)  # no noise was drawn


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_a_seeded_solver_is_deterministic_and_leaves_its_input_alone(name):
    small = GaussianDiffusion(20, 1e-4, 0.02)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    before = x_T.clone()
    timesteps = all_timesteps(20) if name == "ddpm" else trailing_timesteps(20, 6)
    knobs = {} if name == "ddpm" else {"eta": 1.0}
    solver, eps_fn = SAMPLERS[name], oracle_eps_fn(small)
    runs = [
        solver(eps_fn, x_T, small, timesteps, torch.Generator().manual_seed(seed), **knobs)
        for seed in (5, 5, 6)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert torch.equal(x_T, before)


@pytest.mark.parametrize(("name", "timesteps"), [
    ("ddpm", all_timesteps(20)), ("ddim", trailing_timesteps(20, 7)),
    ("ddim", trailing_timesteps(20, 20)), ("dpmpp", [20]), ("dpmpp", trailing_timesteps(20, 6)),
    ("ddim", logsnr_timesteps(GaussianDiffusion(20, 1e-4, 0.02), 7)),
    ("dpmpp", logsnr_timesteps(GaussianDiffusion(20, 1e-4, 0.02), 6)),
    ("dpmpp", [20, 13, 12, 4, 1]),  # any decreasing list: the steps are data
])  # fmt: skip
def test_callback_fires_once_per_step(name, timesteps):
    small = GaussianDiffusion(20, 1e-4, 0.02)
    infos: list[StepInfo] = []
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    knobs = {"eta": 0.3} if name == "ddim" else {}
    x0 = SAMPLERS[name](oracle_eps_fn(small), x_T, small, timesteps,
                        torch.Generator().manual_seed(0), infos.append, **knobs)  # fmt: skip
    assert [info.step for info in infos] == list(range(len(timesteps)))
    assert all(info.num_steps == len(timesteps) for info in infos)
    assert [info.t for info in infos] == list(timesteps)
    assert torch.equal(infos[0].x_t, x_T) and torch.equal(infos[-1].x_prev, x0)
    for before, after in itertools.pairwise(infos):
        assert torch.equal(before.x_prev, after.x_t)


def test_each_solver_takes_only_its_own_knobs():
    """ddpm has no η (its noise is the recipe's); ddim and dpmpp take η as a keyword; none
    takes a step count or a spacing: those are in the timesteps."""
    shared = ["eps_fn", "x_T", "diffusion", "timesteps", "generator", "callback"]
    for name, solver in SAMPLERS.items():
        parameters = inspect.signature(solver).parameters
        own = ["eta"] if name != "ddpm" else []
        assert list(parameters) == shared + own, name
        for knob in own:
            assert parameters[knob].kind is inspect.Parameter.KEYWORD_ONLY
    small = GaussianDiffusion(5, 1e-4, 0.02)
    with pytest.raises(TypeError, match="eta"):
        ddpm_sample(oracle_eps_fn(small), torch.zeros(SHAPE), small, all_timesteps(5),
                    torch.Generator(), eta=1.0)  # fmt: skip


def test_ddpm_refuses_to_skip_timesteps():
    """The posterior q(x_{t−1} | x_t, x0) steps by one: ddpm visits every t = T … 1."""
    small = GaussianDiffusion(20, 1e-4, 0.02)
    x_T = torch.zeros(SHAPE)
    for timesteps in (trailing_timesteps(20, 10), all_timesteps(19), all_timesteps(20)[1:]):
        with pytest.raises(ValueError, match=r"every timestep T … 1 \(T = 20\)"):
            ddpm_sample(oracle_eps_fn(small), x_T, small, timesteps, torch.Generator())


def test_a_bad_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="ddpm, ddim, dpmpp"):
        get_sampler("plms")
    assert SAMPLER_NAMES == tuple(SAMPLERS) == ("ddpm", "ddim", "dpmpp")
    assert all(get_sampler(name) is SAMPLERS[name] for name in SAMPLER_NAMES)
