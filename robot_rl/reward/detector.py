"""When a per-frame success probability becomes an episode's success: M consecutive frames at or above
the threshold. One rule, two forms: `SuccessDetector` (streaming, the episode manager's session) and
`first_fire` (whole recorded episodes, the held-out evaluation), so the reported numbers describe
what the session will do.
"""
from __future__ import annotations

import numpy as np


class SuccessDetector:
    """Streaming form: `update(p)` once per control step; latches True once it has fired.

    A step without a probability (no valid observation) breaks a run of frames above the threshold:
    a success must be seen, not assumed."""

    def __init__(self, threshold: float, consecutive: int):
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        self.threshold, self.consecutive = float(threshold), int(consecutive)
        self.reset()

    def reset(self) -> None:
        self.run = 0
        self.fired = False
        self.max_probability: float | None = None

    def update(self, probability: float | None) -> bool:
        if probability is None or not np.isfinite(probability):
            self.run = 0
            return self.fired
        p = float(probability)
        self.max_probability = p if self.max_probability is None else max(self.max_probability, p)
        self.run = self.run + 1 if p >= self.threshold else 0
        self.fired = self.fired or self.run >= self.consecutive
        return self.fired


def first_fire(probabilities: np.ndarray, threshold: float, consecutive: int) -> int | None:
    """Index of the frame at which the detector first fires on a whole episode (None: never)."""
    above = np.asarray(probabilities, dtype=np.float64) >= threshold
    if consecutive == 1:
        hits = np.flatnonzero(above)
        return int(hits[0]) if len(hits) else None
    run = 0
    for i, a in enumerate(above):
        run = run + 1 if a else 0
        if run >= consecutive:
            return i
    return None
