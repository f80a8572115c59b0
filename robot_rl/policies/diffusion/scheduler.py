"""DDPM noising for training and deterministic DDIM (eta = 0) sampling, written out (no diffusers).

Timesteps for k inference steps use "trailing" spacing by default (T-1, ..., T/k - 1): the first
step starts from pure noise, which matters when k is as small as 1-4; "leading" is diffusers'.
"""
from __future__ import annotations

import math

import torch


def make_betas(schedule: str, timesteps: int) -> torch.Tensor:
    if schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal cosine schedule, as in diffusion_policy
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = [min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999) for i in range(timesteps)]
        return torch.tensor(betas, dtype=torch.float64)
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}")


class DDIMScheduler:
    def __init__(self, timesteps: int, schedule: str, prediction: str = "epsilon", clip_sample: bool = True,
                 spacing: str = "trailing"):
        self.timesteps, self.prediction, self.clip_sample, self.spacing = timesteps, prediction, clip_sample, spacing
        self.alphas_cumprod = torch.cumprod(1.0 - make_betas(schedule, timesteps), 0).float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def inference_timesteps(self, steps: int) -> list[int]:
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"DDIM steps must be in 1..{self.timesteps}, got {steps}")
        if self.spacing == "leading":  # diffusers' default (diffusion_policy): T//k * (k-1), ..., 0
            ts = [(self.timesteps // steps) * i for i in range(steps)]
        else:
            ts = [int(round(self.timesteps - i * self.timesteps / steps)) - 1 for i in range(steps)]
        return sorted({max(t, 0) for t in ts}, reverse=True)

    def step(self, model_out: torch.Tensor, t: int, t_prev: int, x: torch.Tensor) -> torch.Tensor:
        """x_t -> x_{t_prev} (t_prev = -1: the clean sample)."""
        ab = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        if self.prediction == "epsilon":
            x0 = (x - (1 - ab).sqrt() * model_out) / ab.sqrt()
        else:
            x0 = model_out
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clipped x0
        return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
