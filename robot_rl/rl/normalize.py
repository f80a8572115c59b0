"""Action normalisation of the residual: min-max to [-1, 1], range widened by (1 + action_scale).

The widening keeps base + residual representable at the edges of the demonstrated range; the sum is
clamped to [-1, 1] before unnormalising, so the executed action never leaves the widened range. The
bounds are buffers, so they travel inside checkpoints and the exported actor weights.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

MIN_RANGE = 0.1  # a joint that (almost) never moved in the demos still gets a usable range (released code)


class ActionNormalizer(nn.Module):
    """`exact`: [low, high] maps to [-1, 1] as is (a hard box such as an offset's range, not a demo range
    that base + residual must be able to reach beyond)."""

    def __init__(self, low, high, action_scale: float, exact: bool = False):
        super().__init__()
        low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(f"action bounds must be two 1-D arrays of one length, got {tuple(low.shape)} "
                             f"and {tuple(high.shape)}")
        if not (np.isfinite(low).all() and np.isfinite(high).all()) or bool((high < low).any()):
            raise ValueError("action bounds must be finite with high >= low")
        low, high = torch.as_tensor(low), torch.as_tensor(high)  # (meta tensors when built on "meta")
        half = (high - low) / 2 if exact else ((high - low).clamp_min(MIN_RANGE) / 2) * (1.0 + action_scale)
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", half)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    def normalize(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.center) / self.half_range

    def unnormalize(self, action_n: torch.Tensor) -> torch.Tensor:
        return action_n.clamp(-1.0, 1.0) * self.half_range + self.center

    def combine(self, base_action: torch.Tensor, residual_n: torch.Tensor) -> torch.Tensor:
        """Executed raw action = unnormalise(clamp(normalise(base) + residual)), computed in raw
        units so that a zero residual returns the base bit for bit (inside the widened range)."""
        return torch.minimum(torch.maximum(base_action + residual_n * self.half_range, self.center - self.half_range),
                             self.center + self.half_range)

    def normalize_np(self, action: np.ndarray) -> np.ndarray:
        c, h = self.center.cpu().numpy(), self.half_range.cpu().numpy()
        return ((np.asarray(action, dtype=np.float32) - c) / h).astype(np.float32)


def data_bounds(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max over one or more (T, n) action arrays."""
    stacked = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1, a.shape[-1]) for a in arrays])
    if not len(stacked):
        raise ValueError("no actions to compute bounds from (the store has no demo steps)")
    return stacked.min(axis=0), stacked.max(axis=0)
