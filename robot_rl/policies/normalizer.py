"""Per-key affine normalisation with statistics computed from the store and saved in the checkpoint.

Actions and proprio: min-max to [-1, 1] (the diffusion target must live in the clip range, and the
residual actor works in the same normalised action space). Tactile: mean/std over the whole grid
(mostly-zero taxels would get huge per-taxel scales). Images are not here: the encoder maps uint8 to
[-1, 1] itself. Stats are plain lists in config.json, so the scale/offset buffers are rebuilt on load
(non-persistent: the weights file holds only learned weights).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

RANGE_EPS = 1e-4  # a dimension that never moves (range below this) maps to 0 with unit scale
STD_EPS = 1e-3


def compute_stats(data: Mapping[str, np.ndarray], modes: Mapping[str, str]) -> dict[str, dict]:
    """{key: {"mode", "min", "max", "mean", "std"}} from rows (N, *shape). `meanstd` is computed over
    every element of a key (one scalar broadcast to the shape)."""
    stats = {}
    for key, mode in modes.items():
        x = np.asarray(data[key], dtype=np.float64)
        if len(x) == 0:
            raise ValueError(f"cannot compute normalizer stats for {key!r}: no rows")
        entry = {"mode": mode, "min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0), "std": x.std(axis=0)}
        if mode == "meanstd":
            entry["mean"] = np.full(x.shape[1:], x.mean())
            entry["std"] = np.full(x.shape[1:], x.std())
        stats[key] = {k: (v.astype(np.float32).tolist() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
    return stats


def _affine(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    mode = entry["mode"]
    lo, hi = np.asarray(entry["min"], np.float64), np.asarray(entry["max"], np.float64)
    if mode == "minmax":
        span = hi - lo
        moving = span > RANGE_EPS
        scale = np.where(moving, 2.0 / np.where(moving, span, 1.0), 1.0)
        offset = np.where(moving, -1.0 - lo * scale, -0.5 * (lo + hi))
    elif mode == "meanstd":
        scale = 1.0 / np.maximum(np.asarray(entry["std"], np.float64), STD_EPS)
        offset = -np.asarray(entry["mean"], np.float64) * scale
    elif mode == "identity":
        scale, offset = np.ones_like(lo), np.zeros_like(lo)
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}")
    return scale.astype(np.float32), offset.astype(np.float32)


class Normalizer(nn.Module):
    """normalize(key, x) = x * scale + offset, broadcast over leading (batch, time) axes."""

    def __init__(self, stats: Mapping[str, dict]):
        super().__init__()
        self.stats = {k: dict(v) for k, v in stats.items()}
        self._names = {}
        for i, (key, entry) in enumerate(sorted(self.stats.items())):
            scale, offset = _affine(entry)
            name = f"k{i}"
            self._names[key] = name
            self.register_buffer(f"{name}_scale", torch.from_numpy(scale), persistent=False)
            self.register_buffer(f"{name}_offset", torch.from_numpy(offset), persistent=False)

    def __contains__(self, key: str) -> bool:
        return key in self._names

    def _params(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._names:
            raise KeyError(f"normalizer has no statistics for {key!r} (has: {', '.join(self._names)})")
        n = self._names[key]
        return getattr(self, f"{n}_scale"), getattr(self, f"{n}_offset")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._params(key)
        return x * scale + offset

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        scale, offset = self._params(key)
        return (y - offset) / scale

    def to_json(self) -> dict:
        return {k: dict(v) for k, v in self.stats.items()}
