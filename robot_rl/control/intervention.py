"""Human interventions (HIL-SERL style), without ROS: while the teleop device says it is intervening
and its command is fresh, the robot executes the human's command instead of base + residual.

The policy node still computes the base action at those ticks and publishes it with the residual
`command - base`, so the recorder stores what the base would have done next to what the human did;
the learner puts such episodes in the online and the demo buffer.
"""
from __future__ import annotations

import threading
import time

import numpy as np


class InterventionGate:
    def __init__(self, max_age_s: float):
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._target: np.ndarray | None = None
        self._target_at = -np.inf
        self._intervening = False
        self.ticks = 0  # ticks the human drove, since the start
        self.episode_ticks = 0  # since the last reset_episode()

    def command(self, target: np.ndarray, now: float | None = None) -> None:
        with self._lock:
            self._target, self._target_at = np.asarray(target, dtype=np.float64), time.monotonic() if now is None else now

    def intervening(self, flag: bool) -> None:
        with self._lock:
            self._intervening = bool(flag)

    def override(self, now: float | None = None) -> np.ndarray | None:
        """The human's command for this tick, or None when the policy acts. A stale teleop stream
        (device unplugged mid-intervention) hands control back to the policy rather than freezing."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._intervening or self._target is None or now - self._target_at > self.max_age_s:
                return None
            self.ticks += 1
            self.episode_ticks += 1
            return self._target.copy()

    def reset_episode(self) -> None:
        with self._lock:
            self.episode_ticks = 0
