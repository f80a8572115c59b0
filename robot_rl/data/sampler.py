"""Random (observation, action) windows for training, from committed episodes held in RAM.

Same windows and edge padding as diffusion_policy's SequenceSampler (steps before an episode's
start repeat its first step, steps after its end repeat its last), but a whole batch is gathered
with one vectorised index per key instead of a Python loop per sample; images stay uint8.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class SequenceSampler:
    """Window w covers steps s..s+L-1 of one episode (L = max(obs_horizon, pred_horizon)): obs keys
    get the first `obs_horizon` steps, action keys the first `pred_horizon` steps. Starts range from
    `pad_before` steps before the episode to `pad_after` steps past its last full window."""

    def __init__(self, data: Mapping[str, np.ndarray], episode_ends: np.ndarray, *, obs_keys: Sequence[str],
                 action_keys: Sequence[str], obs_horizon: int = 2, pred_horizon: int = 16,
                 pad_before: int | None = None, pad_after: int | None = None,
                 episodes: Sequence[int] | None = None):
        if obs_horizon < 1 or pred_horizon < 1:
            raise ValueError("obs_horizon and pred_horizon must be at least 1")
        missing = [k for k in (*obs_keys, *action_keys) if k not in data]
        if missing:
            raise KeyError(f"keys not in data: {', '.join(missing)} (have {', '.join(data)})")
        ends = np.asarray(episode_ends, dtype=np.int64)
        n_rows = int(ends[-1]) if len(ends) else 0
        short = [k for k in (*obs_keys, *action_keys) if len(data[k]) < n_rows]
        if short:
            raise ValueError(f"keys shorter than episode_ends[-1]={n_rows}: {', '.join(short)}")
        self.data = data
        self.obs_keys, self.action_keys = list(obs_keys), list(action_keys)
        self.obs_horizon, self.pred_horizon = obs_horizon, pred_horizon
        self.window = max(obs_horizon, pred_horizon)
        self.pad_before = obs_horizon - 1 if pad_before is None else pad_before
        self.pad_after = max(0, pred_horizon - obs_horizon) if pad_after is None else pad_after
        if self.pad_before < 0 or self.pad_after < 0:
            raise ValueError("pad_before and pad_after must be >= 0")
        self._starts, self._lo, self._hi = self._windows(ends, episodes)
        self._offsets = np.arange(self.window, dtype=np.int64)

    def _windows(self, ends: np.ndarray, episodes: Sequence[int] | None):
        begins = np.concatenate([[0], ends[:-1]])
        chosen = np.arange(len(ends)) if episodes is None else np.asarray(episodes, dtype=np.int64)
        lo, hi = begins[chosen], ends[chosen]
        first = lo - self.pad_before
        last = hi - self.window + self.pad_after  # inclusive
        counts = np.maximum(0, last - first + 1)
        rep_lo, rep_hi = np.repeat(lo, counts), np.repeat(hi, counts)
        within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(first, counts) + within, rep_lo, rep_hi

    def __len__(self) -> int:
        return len(self._starts)

    def get(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Batch of windows: {obs key: (B, obs_horizon, ...), action key: (B, pred_horizon, ...),
        "action_is_pad": (B, pred_horizon) bool (steps copied from outside the episode)}."""
        windows = np.asarray(windows, dtype=np.int64)
        raw = self._starts[windows, None] + self._offsets
        idx = np.clip(raw, self._lo[windows, None], self._hi[windows, None] - 1)
        out = {}
        obs_idx = idx[:, :self.obs_horizon]
        act_idx = idx[:, :self.pred_horizon]
        for k in self.obs_keys:
            out[k] = np.take(self.data[k], obs_idx, axis=0)
        for k in self.action_keys:
            out[k] = np.take(self.data[k], act_idx, axis=0)
        act_raw = raw[:, :self.pred_horizon]
        out["action_is_pad"] = (act_raw < self._lo[windows, None]) | (act_raw >= self._hi[windows, None])
        return out

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Uniformly random windows (with replacement)."""
        if len(self) == 0:
            raise ValueError("no windows: every selected episode is shorter than the window allows")
        rng = rng if rng is not None else np.random.default_rng()
        return self.get(rng.integers(0, len(self), batch_size))

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """One window without the batch axis (for torch-style datasets)."""
        return {k: v[0] for k, v in self.get(np.array([i])).items()}


def split_episodes(n_episodes: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random train/validation split by whole episodes (windows never straddle the split)."""
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(n_episodes * val_fraction)) if n_episodes > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and n_episodes > 1 else 0), n_episodes - 1 if n_episodes else 0)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
