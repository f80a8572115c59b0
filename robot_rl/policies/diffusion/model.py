"""Diffusion model: DDPM epsilon-prediction loss for training, DDIM sampling of the action chunk
conditioned (FiLM, global) on the flattened observation-history features."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from robot_rl.policies.base import ChunkModel
from robot_rl.policies.diffusion.config import DiffusionConfig
from robot_rl.policies.diffusion.scheduler import DDIMScheduler
from robot_rl.policies.diffusion.unet import ConditionalUnet1D
from robot_rl.policies.spec import PolicySpec


class DiffusionModel(ChunkModel):
    def __init__(self, cfg: DiffusionConfig, spec: PolicySpec, stats: Mapping[str, dict]):
        super().__init__(cfg, spec, stats)
        self.unet = ConditionalUnet1D(self.action_dim, self.feature_dim, list(cfg.down_dims), cfg.kernel_size,
                                      cfg.n_groups, cfg.step_embed_dim)
        self.scheduler = DDIMScheduler(cfg.train_timesteps, cfg.beta_schedule, cfg.prediction, cfg.clip_sample,
                                       cfg.timestep_spacing)

    def head_loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # drawn from the CPU RNG even on a GPU: the draws are the same on both, and resume restores them
        noise = torch.randn(actions.shape, dtype=actions.dtype).to(actions.device)
        t = torch.randint(0, self.cfg.train_timesteps, (actions.shape[0],)).to(actions.device)
        out = self.unet(self.scheduler.add_noise(actions, noise, t), t, features)
        return F.mse_loss(out, noise if self.cfg.prediction == "epsilon" else actions)

    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        shape = (features.shape[0], self.cfg.pred_horizon, self.action_dim)
        x = torch.randn(shape, generator=generator, dtype=features.dtype).to(features.device)
        ts = self.scheduler.inference_timesteps(steps or self.cfg.inference_steps)
        for i, t in enumerate(ts):
            out = self.unet(x, torch.full((shape[0],), t, dtype=torch.long, device=x.device), features)
            x = self.scheduler.step(out, t, ts[i + 1] if i + 1 < len(ts) else -1, x)
        return x
