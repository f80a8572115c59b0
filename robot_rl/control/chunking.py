"""Executing action chunks at the control rate while inference runs in another thread.

A chunk predicted from the observation at t_obs holds actions for t_obs, t_obs + dt, ...; by the
time it arrives some of those instants have passed, and those actions are skipped (latency
compensation, as diffusion_policy's real-world loop does). Optional temporal ensembling (ACT)
averages every stored chunk's prediction for the current instant with weights exp(-k * i), i = 0
for the oldest chunk.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Chunk:
    t_obs: float
    actions: np.ndarray  # (pred_horizon, action_dim)
    features: np.ndarray | None = None  # the base encoder's features of the chunk's observation window


class ChunkExecutor:
    def __init__(self, control_dt: float, exec_horizon: int, ensemble_k: float = 0.0, keep: int = 8):
        self.dt = control_dt
        self.exec_horizon = exec_horizon
        self.ensemble_k = ensemble_k
        self.chunks: deque[Chunk] = deque(maxlen=keep if ensemble_k > 0 else 1)
        self.lock = threading.Lock()
        self.skipped = 0  # actions whose time had passed when their chunk arrived
        self.late_chunks = 0

    def index(self, chunk: Chunk, t: float) -> int:
        return int(round((t - chunk.t_obs) / self.dt))

    def add(self, t_obs: float, actions: np.ndarray, now: float, features: np.ndarray | None = None) -> None:
        chunk = Chunk(t_obs, np.asarray(actions), features)
        late = max(0, self.index(chunk, now))
        with self.lock:
            if late:
                self.late_chunks += 1
                self.skipped += late
            self.chunks.append(chunk)

    def reset(self) -> None:
        with self.lock:
            self.chunks.clear()

    def action_at(self, t: float) -> tuple[np.ndarray, int] | None:
        """(action, phase) for instant t, phase = the action's index in the newest chunk; None when
        no chunk covers t (none yet, or the newest is exhausted)."""
        with self.lock:
            if not self.chunks:
                return None
            newest = self.chunks[-1]
            k = self.index(newest, t)
            if k < 0 or k >= min(len(newest.actions), self.exec_horizon):
                return None
            if self.ensemble_k <= 0 or len(self.chunks) == 1:
                return newest.actions[k].copy(), k
            preds, weights = [], []
            for i, chunk in enumerate(self.chunks):
                j = self.index(chunk, t)
                if 0 <= j < len(chunk.actions):
                    preds.append(chunk.actions[j])
                    weights.append(np.exp(-self.ensemble_k * len(preds)))
            w = np.asarray(weights) / np.sum(weights)
            return np.tensordot(w, np.asarray(preds), axes=1), k

    def features(self) -> np.ndarray | None:
        """The newest chunk's base features (the chunk action_at takes the phase from)."""
        with self.lock:
            return self.chunks[-1].features if self.chunks else None

    def needs_chunk(self, t: float, lead_steps: int) -> bool:
        """Ask for the next chunk `lead_steps` control periods before the newest runs out, so the
        control loop never waits on inference."""
        with self.lock:
            if not self.chunks:
                return True
            return self.index(self.chunks[-1], t) >= self.exec_horizon - lead_steps


class ObservationHistory:
    """The last `horizon` observations (store-keyed arrays) at control ticks; at an episode start
    the first observation is repeated, as the training sampler pads."""

    def __init__(self, horizon: int):
        self.horizon = horizon
        self.items: deque[dict[str, np.ndarray]] = deque(maxlen=horizon)

    def push(self, obs: dict[str, np.ndarray]) -> None:
        self.items.append(obs)

    def reset(self) -> None:
        self.items.clear()

    def window(self) -> dict[str, np.ndarray]:
        items = list(self.items)
        items = [items[0]] * (self.horizon - len(items)) + items
        return {k: np.stack([o[k] for o in items]) for k in items[-1]}
