"""Diffusion policy config. Schedule defaults are diffusion_policy's (100 train steps, squared
cosine, epsilon prediction, clipped x0); the UNet is narrower (64/128/256 vs the sim configs'
256/512/1024) so that training and CPU inference fit their budgets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robot_rl.config.typed import check
from robot_rl.policies.config import PolicyConfig, TrainConfig


@dataclass
class DiffusionConfig(PolicyConfig):
    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 64
    train_timesteps: int = 100
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2"
    prediction: Literal["epsilon", "sample"] = "epsilon"
    clip_sample: bool = True  # clip the predicted clean chunk to [-1, 1] (the min-max range)
    inference_steps: int = 8  # DDIM steps at inference
    timestep_spacing: Literal["trailing", "leading"] = "trailing"  # trailing: the first step is t = T-1

    def validate(self) -> None:
        super().validate()
        check(len(self.down_dims) >= 1, "needs at least one level", "down_dims")
        check(all(d % self.n_groups == 0 for d in self.down_dims),
              f"each width must be divisible by n_groups={self.n_groups}", "down_dims")
        levels = 2 ** (len(self.down_dims) - 1)
        check(self.pred_horizon % levels == 0,
              f"pred_horizon {self.pred_horizon} must be divisible by {levels} (one halving per extra level)",
              "pred_horizon")
        check(self.kernel_size % 2 == 1, "must be odd", "kernel_size")
        check(self.train_timesteps >= 2, "must be at least 2", "train_timesteps")
        check(1 <= self.inference_steps <= self.train_timesteps,
              f"must be in 1..train_timesteps ({self.train_timesteps})", "inference_steps")


@dataclass
class DiffusionTrainConfig(TrainConfig):
    """Measured on 86 sim demos, 2 shared cores: batch 32 at 1e-3 for 3600 steps (14 min) reached
    43 % success; batch 64 at 3e-4 for 1600 steps (12 min) only 6 % (the denoiser was far from
    converged). See docs/policies.md."""

    steps: int = 3600
    batch_size: int = 32
    lr: float = 1e-3
    ema: bool = True
