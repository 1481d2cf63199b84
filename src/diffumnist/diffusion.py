"""The DDPM process of Ho et al. (2020): schedule, forward noising, reverse step, loss.

A plain object with no loops and no I/O; the network is passed into each call that needs
one, so EMA weights or a guided wrapper drop straight in (the improved-diffusion habit).

Timesteps follow the recipe: t in {1, ..., T}, the schedule is indexed at t - 1, and
alpha_bar_0 = 1. diffusers counts 0 ... T-1 for the same steps, so its step k is our t = k + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffumnist.config import ModelConfig


class GaussianDiffusion(nn.Module):
    """Linear-beta DDPM schedule with ε-prediction and fixed-large variance (β_t).

    Buffers are computed in float64 and stored as float32 (lucidrains' habit), so they move
    with `.to(device)`. Every per-step array has length T and is indexed at t - 1.
    """

    def __init__(self, num_timesteps: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.num_timesteps = num_timesteps
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        schedule = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            # Eq. (7): mean of q(x_{t-1} | x_t, x0) = coef1 * x0 + coef2 * x_t.
            "posterior_mean_coef1": alphas_cumprod_prev.sqrt() * betas / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": alphas.sqrt()
            * (1.0 - alphas_cumprod_prev)
            / (1.0 - alphas_cumprod),
            # Algorithm 2 uses σ_t² = β_t ("fixed_large"), not the posterior's β̃_t.
            "sampling_variance": betas,
        }
        for name, value in schedule.items():
            self.register_buffer(name, value.float(), persistent=False)

    @classmethod
    def from_config(cls, config: ModelConfig) -> GaussianDiffusion:
        return cls(config.num_timesteps, config.beta_start, config.beta_end)

    def _at(self, values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """values[t - 1] shaped to broadcast over `like` (N, C, H, W).

        An integer t (what samplers pass) is checked here, in Python; a tensor of timesteps
        (training's draw) is not, since checking it would wait for the device every step:
        `sample_timesteps` draws valid ones by construction.
        """
        if isinstance(t, int):
            if not 1 <= t <= self.num_timesteps:
                raise ValueError(f"timesteps must lie in 1..{self.num_timesteps}; got {t}")
            return values[t - 1].to(like.dtype)
        return values[t.long() - 1].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def time_fraction(self, t: torch.Tensor) -> torch.Tensor:
        """What the network sees: t / T as float (N,)."""
        return t.float() / self.num_timesteps

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor
    ) -> torch.Tensor:
        """Eq. (4): x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
        return (
            self._at(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0_from_eps(
        self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor
    ) -> torch.Tensor:
        """Invert Eq. (4): x̂0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t."""
        return (x_t - self._at(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / self._at(
            self.sqrt_alphas_cumprod, t, x_t
        )

    def predict_eps_from_x0(
        self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor
    ) -> torch.Tensor:
        """ε = (x_t − √ᾱ_t·x0) / √(1−ᾱ_t)."""
        return (x_t - self._at(self.sqrt_alphas_cumprod, t, x_t) * x0) / self._at(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def q_posterior_mean(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> torch.Tensor:
        """Eq. (7): μ̃_t(x_t, x0)."""
        return (
            self._at(self.posterior_mean_coef1, t, x_t) * x0
            + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        )

    def p_sample_step(
        self, x_t: torch.Tensor, t: int, eps: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of Algorithm 2 given ε_θ(x_t, t): returns (x_{t−1}, x̂0).

        x̂0 is not clipped (the recipe), and no noise is added at t = 1.
        """
        x0_pred = self.predict_x0_from_eps(x_t, t, eps)
        mean = self.q_posterior_mean(x0_pred, x_t, t)
        if t == 1:
            return mean, x0_pred
        return mean + self._at(self.sampling_variance, t, x_t).sqrt() * noise, x0_pred

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """t ~ U{1..T} for n images (on the generator's device, like all training noise)."""
        return torch.randint(1, self.num_timesteps + 1, (n,), generator=generator)

    def training_loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        c: torch.Tensor | None = None,
        min_snr_gamma: float = 0.0,
    ) -> torch.Tensor:
        """Algorithm 1 for drawn t ~ U{1..T} and ε ~ N(0, I): MSE between ε and ε_θ(x_t, t[, c]),
        each image's error weighted by `min_snr_weight` when min_snr_gamma > 0.

        The caller draws t and ε, so data-parallel ranks can draw them for the whole global
        batch and each keep its share (see distributed.py).
        """
        x_t = self.q_sample(x0, t, noise)
        eps_pred = net(x_t, self.time_fraction(t), c)
        if not min_snr_gamma:
            return F.mse_loss(eps_pred.float(), noise)
        per_image = (eps_pred.float() - noise).square().mean(dim=(1, 2, 3))  # (N,)
        return (self.min_snr_weight(t, min_snr_gamma) * per_image).mean()

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """min(SNR_t, γ) / SNR_t with SNR_t = ᾱ_t / (1 − ᾱ_t), for t (N,): the min-SNR-γ weight
        of the ε-loss (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
        Strategy", their weight for ε-prediction), which stops the nearly clean
        steps (high SNR) from dominating the gradient. 1 wherever SNR_t <= γ."""
        alpha_bar = self.alphas_cumprod[t.long() - 1]
        snr = alpha_bar / (1.0 - alpha_bar)
        return snr.clamp(max=gamma) / snr
