"""BC model: encoded observation history -> MLP -> (pred_horizon, action_dim) in normalised units."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.policies.base import ChunkModel
from robot_rl.policies.bc.config import BCConfig
from robot_rl.policies.spec import PolicySpec


class BCModel(ChunkModel):
    def __init__(self, cfg: BCConfig, spec: PolicySpec, stats: Mapping[str, dict]):
        super().__init__(cfg, spec, stats)
        layers: list[nn.Module] = []
        dim = self.feature_dim
        for h in cfg.hidden:
            layers += [nn.Linear(dim, h), nn.ReLU()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            dim = h
        layers.append(nn.Linear(dim, cfg.pred_horizon * self.action_dim))
        self.head = nn.Sequential(*layers)

    def head_loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        pred = self.head(features).view_as(actions)
        return F.l1_loss(pred, actions) if self.cfg.loss == "l1" else F.mse_loss(pred, actions)

    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """Deterministic: `generator` and `steps` are accepted for a common interface and ignored."""
        return self.head(features).view(features.shape[0], self.cfg.pred_horizon, self.action_dim)
