"""What BC and diffusion share: normaliser + observation encoder in front of an action-chunk head.

Models take raw batches (uint8 images, float streams in store units) so training, checkpoint
round trips and inference all run the same normalisation code; the head works in normalised
action space ([-1, 1] with min-max).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.policies.normalizer import Normalizer
from robot_rl.policies.spec import PolicySpec


class ChunkModel(nn.Module):
    def __init__(self, cfg: PolicyConfig, spec: PolicySpec, stats: Mapping[str, dict]):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.obs_keys = sorted(spec.obs)
        self.action_dim = spec.action_dim
        self.normalizer = Normalizer(stats)
        self.encoder = ObservationEncoder(cfg.observation, {k: (v.shape, v.dtype) for k, v in spec.obs.items()})
        self.feature_dim = self.encoder.step_dim * cfg.obs_horizon

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{key: (B, obs_horizon, *shape)} raw -> (B, feature_dim)."""
        normed = {}
        for key in self.obs_keys:
            x = obs[key]
            normed[key] = x if self.encoder.kinds[key] == "image" else self.normalizer.normalize(key, x.float())
        return self.encoder(normed)

    def normalized_actions(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.normalizer.normalize(self.spec.action_key, batch[self.spec.action_key].float())

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a raw batch: obs (B, obs_horizon, ...), action (B, pred_horizon, A)."""
        return self.head_loss(self.encode(batch), self.normalized_actions(batch))

    @torch.no_grad()
    def predict_actions(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                        steps: int | None = None) -> torch.Tensor:
        """(B, pred_horizon, A) in store (joint) units, not yet clipped."""
        y = self.sample(self.encode(obs), generator=generator, steps=steps)
        return self.normalizer.unnormalize(self.spec.action_key, y)

    # ---- implemented by each policy class ----
    def head_loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """Normalised action chunk (B, pred_horizon, A) for encoded observations."""
        raise NotImplementedError
