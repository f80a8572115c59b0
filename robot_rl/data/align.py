"""Time alignment by as-of join (DESIGN.md §4): the observation at time t takes, per stream, the
latest sample with capture stamp <= t, and is invalid if that sample is older than the stream's
max_age or missing. Never a sample from the future, never a silently stale one.

The policy node calls `observe(t)` at each control tick and the recorder calls it at the same
ticks, so training data and deployment observations are built by the same code. Sensor callbacks
`add()` from one thread while the control tick observes from another; both are O(1)-ish and
allocate nothing but the returned Observation.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Observation:
    t: float
    valid: bool
    values: dict[str, Any]  # stream -> value of the chosen sample (stored by reference, not copied)
    stamps: dict[str, float]  # stream -> capture stamp of the chosen sample
    problems: dict[str, str]  # stream -> why it made the observation invalid

    @property
    def reason(self) -> str:
        return "; ".join(f"{s}: {p}" for s, p in self.problems.items())


class _Ring:
    """Fixed-capacity (stamp, value) ring with non-decreasing stamps."""

    __slots__ = ("stamps", "values", "head", "count", "received", "out_of_order", "stale", "missing")

    def __init__(self, capacity: int):
        self.stamps = [0.0] * capacity
        self.values: list[Any] = [None] * capacity
        self.head = self.count = 0
        self.received = self.out_of_order = self.stale = self.missing = 0


class AsOfAligner:
    """Per-stream ring buffers with a `max_age` (seconds) each."""

    def __init__(self, max_age: Mapping[str, float], capacity: int = 64):
        if not max_age:
            raise ValueError("at least one stream is needed")
        bad = {s: a for s, a in max_age.items() if not (a > 0 and math.isfinite(a))}
        if bad:
            raise ValueError(f"max_age must be a positive number of seconds; got {bad}")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.max_age = dict(max_age)
        self.capacity = capacity
        self._rings = {s: _Ring(capacity) for s in self.max_age}
        self._lock = threading.Lock()

    @property
    def streams(self) -> list[str]:
        return list(self._rings)

    def add(self, stream: str, stamp: float, value: Any) -> bool:
        """Buffer one sample (stamp = capture time). A sample older than the stream's newest one is
        dropped and counted (returns False): it could otherwise change the past after an observe."""
        ring = self._rings.get(stream)
        if ring is None:
            raise KeyError(f"unknown stream {stream!r} (streams: {', '.join(self._rings)})")
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stream {stream!r}: stamp must be finite, got {stamp}")
        with self._lock:
            cap = self.capacity
            if ring.count and stamp < ring.stamps[(ring.head - 1) % cap]:
                ring.out_of_order += 1
                return False
            ring.stamps[ring.head] = stamp
            ring.values[ring.head] = value
            ring.head = (ring.head + 1) % cap
            ring.count = min(ring.count + 1, cap)
            ring.received += 1
            return True

    def observe(self, t: float) -> Observation:
        """The as-of join at time t (same clock as the stamps)."""
        t = float(t)
        values: dict[str, Any] = {}
        stamps: dict[str, float] = {}
        problems: dict[str, str] = {}
        with self._lock:
            cap = self.capacity
            for name, ring in self._rings.items():
                idx = -1
                for k in range(ring.count):  # newest first; usually stops at k = 0 or 1
                    i = (ring.head - 1 - k) % cap
                    if ring.stamps[i] <= t:
                        idx = i
                        break
                if idx < 0:
                    ring.missing += 1
                    if ring.count == 0:
                        problems[name] = "no sample received yet"
                    else:
                        oldest = ring.stamps[(ring.head - ring.count) % cap]
                        problems[name] = f"no sample at or before t (oldest buffered is {oldest - t:.3f} s later)"
                    continue
                age = t - ring.stamps[idx]
                if age > self.max_age[name]:
                    ring.stale += 1
                    problems[name] = f"stale: newest sample is {age:.3f} s old (max_age {self.max_age[name]:.3f} s)"
                    continue
                values[name] = ring.values[idx]
                stamps[name] = ring.stamps[idx]
        return Observation(t, not problems, values, stamps, problems)

    def latest_stamp(self, stream: str) -> float | None:
        ring = self._rings[stream]
        with self._lock:
            return ring.stamps[(ring.head - 1) % self.capacity] if ring.count else None

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per stream (for diagnostics and the episode health record)."""
        with self._lock:
            return {s: {"received": r.received, "out_of_order": r.out_of_order, "stale": r.stale, "missing": r.missing}
                    for s, r in self._rings.items()}

    def clear(self) -> None:
        with self._lock:
            self._rings = {s: _Ring(self.capacity) for s in self.max_age}


def asof_indices(sample_stamps: np.ndarray, ticks: np.ndarray, max_age: float) -> tuple[np.ndarray, np.ndarray]:
    """Offline form of the same join for whole recordings: for each tick the index of the latest
    sample with stamp <= tick (-1 if none) and whether it is within max_age. `sample_stamps` must
    be non-decreasing (as the online aligner guarantees by dropping out-of-order samples)."""
    sample_stamps = np.asarray(sample_stamps, dtype=np.float64)
    ticks = np.asarray(ticks, dtype=np.float64)
    idx = np.searchsorted(sample_stamps, ticks, side="right") - 1
    has = idx >= 0
    age = np.where(has, ticks - sample_stamps[np.maximum(idx, 0)], np.inf)
    return idx, has & (age <= max_age)
