"""The DDPM mathematics: the paper's identities, and agreement with diffusers."""

from __future__ import annotations

import pytest
import torch

from diffumnist.diffusion import GaussianDiffusion

T = 300


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(T, 1e-4, 0.02)


def test_schedule_matches_recipe(diffusion):
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    torch.testing.assert_close(diffusion.betas, betas.float())
    torch.testing.assert_close(diffusion.alphas_cumprod, torch.cumprod(1 - betas, 0).float())
    assert diffusion.alphas_cumprod_prev[0] == 1.0  # ᾱ_0 = 1
    torch.testing.assert_close(diffusion.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[:-1])


def test_q_sample_with_zero_noise_scales_x0(diffusion):
    x0 = torch.rand(4, 1, 28, 28)
    for t in (1, 150, 300):
        x_t = diffusion.q_sample(x0, t, torch.zeros_like(x0))
        torch.testing.assert_close(x_t, diffusion.alphas_cumprod[t - 1].sqrt() * x0)
    # at t = 1 almost nothing happens: ᾱ_1 = 1 - 1e-4
    x_1 = diffusion.q_sample(x0, 1, torch.randn_like(x0))
    assert (x_1 - x0).abs().mean() < 0.02


def test_q_sample_marginal_variance_is_one_at_t_T(diffusion):
    x0 = torch.zeros(20000, 1, 1, 1)
    x_T = diffusion.q_sample(x0, T, torch.randn_like(x0))
    assert abs(x_T.var().item() - (1 - diffusion.alphas_cumprod[-1].item())) < 0.03


def test_eps_to_x0_to_eps_round_trip(diffusion):
    x_t, eps = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    t = torch.randint(1, T + 1, (8,))
    x0 = diffusion.predict_x0_from_eps(x_t, t, eps)
    torch.testing.assert_close(diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-4, rtol=1e-4)


def test_posterior_coefficients_match_closed_form(diffusion):
    b = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    a = 1 - b
    ab = torch.cumprod(a, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    torch.testing.assert_close(
        diffusion.posterior_mean_coef1, (ab_prev.sqrt() * b / (1 - ab)).float()
    )
    torch.testing.assert_close(
        diffusion.posterior_mean_coef2, (a.sqrt() * (1 - ab_prev) / (1 - ab)).float()
    )
    # the posterior mean of the true x0 is a weighted mean: coefficients on x0 and x_t
    # sum to the value that keeps a constant image constant in expectation
    assert torch.all(diffusion.posterior_mean_coef1 > 0)


def test_timesteps_outside_range_are_refused(diffusion):
    x = torch.zeros(1, 1, 28, 28)
    for bad in (0, T + 1):
        with pytest.raises(ValueError):
            diffusion.q_sample(x, bad, x)


def test_last_step_adds_no_noise(diffusion):
    x_t, eps = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    a, _ = diffusion.p_sample_step(x_t, 1, eps, torch.zeros_like(x_t))
    b, _ = diffusion.p_sample_step(x_t, 1, eps, torch.randn_like(x_t))
    torch.testing.assert_close(a, b)


def _diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        variance_type="fixed_large",
        clip_sample=False,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(T)
    return scheduler


def test_forward_noising_agrees_with_diffusers_add_noise(diffusion):
    scheduler = _diffusers_scheduler()
    x0, noise = torch.rand(T, 1, 28, 28), torch.randn(T, 1, 28, 28)
    t = torch.arange(1, T + 1)
    ours = diffusion.q_sample(x0, t, noise)
    theirs = scheduler.add_noise(x0, noise, t - 1)  # diffusers counts 0 ... T-1
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_reverse_step_agrees_with_diffusers_at_every_t(diffusion):
    """Identical ε predictions and noise give the same x_{t-1} for t = T ... 1.

    ε is an imperfect oracle (the true noise towards a fixed image, perturbed), so the
    trajectory stays in the data's range as it does with a trained network. Tolerance:
    diffusers recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32, off by up to 2e-4 relative at
    small t, while ours keeps the exact float64 schedule.
    """
    scheduler = _diffusers_scheduler()
    assert scheduler.timesteps.tolist() == list(range(T - 1, -1, -1))
    torch.manual_seed(0)
    x0_target = torch.rand(3, 1, 28, 28)
    x_t = torch.randn(3, 1, 28, 28)
    for t in range(T, 0, -1):
        eps = diffusion.predict_eps_from_x0(x_t, t, x0_target) + 0.1 * torch.randn_like(x_t)
        seed = 1000 + t
        ours_noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed))
        ours, _ = diffusion.p_sample_step(x_t, t, eps, ours_noise)
        theirs = scheduler.step(
            eps, t - 1, x_t, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=f"differs at t={t}")
        x_t = ours
    assert x_t.abs().max() < 3
