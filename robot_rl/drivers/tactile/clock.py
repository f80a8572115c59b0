"""Device clock -> host clock mapping, so each frame is stamped with (host time of) its capture.

Host receive times are the capture time plus a transport delay that is never negative but often
large (USB polling, serial buffering, several frames read at once, a busy host). The lower
envelope of `host_receive - device_time` is the clock offset plus the *minimum* delay, so we track
per-block minima over a sliding window, fit the device crystal's drift (slope) through them, and
put the line through the lowest point. The device's µs counter wraps every 71.6 min (uint32);
a backwards jump means the device restarted, and the estimate starts over.
"""
from __future__ import annotations

from collections import deque

from robot_rl.drivers.tactile.protocol import TIME_MOD


class ClockSync:
    """`stamp(t_us, host_receive) -> host time of capture` (host clock in seconds, any epoch)."""

    def __init__(self, window_s: float = 8.0, block_s: float = 0.25, max_drift_ppm: float = 2000.0,
                 jump_s: float = 0.5):
        self.block_s = block_s
        self.max_slope = max_drift_ppm * 1e-6
        self.jump_s = jump_s
        self._blocks: deque[tuple[float, float]] = deque(maxlen=max(3, int(round(window_s / block_s))))
        self.resets = 0
        self._last_stamp = float("-inf")  # kept across resets: stamps never go backwards
        self.reset()
        self.resets = 0

    def reset(self) -> None:
        """Forget everything (new connection, device restart)."""
        self.resets += 1
        self._last_raw: int | None = None
        self._dev_us = 0  # unwrapped device time, µs since the first sample
        self._off0 = 0.0  # first host - device offset; everything below is relative to it
        self._blocks.clear()
        self._block_start = 0.0
        self._block_min: tuple[float, float] | None = None  # (device s, relative offset) of the block minimum
        self._a, self._b = 0.0, 0.0  # relative offset = a + b * device_s
        self._dev = 0.0
        self.samples = 0

    def stamp(self, t_us: int, host: float) -> float:
        return self.stamp_batch([t_us], host)[0]

    def stamp_batch(self, t_us: list[int], host: float) -> list[float]:
        """Stamps for frames that arrived in one read at `host`: all of them update the envelope first,
        so the earlier frames of a burst benefit from the latest (least delayed) one."""
        devs = [self._observe(t, host) for t in t_us]
        out = []
        for dev in devs:
            # never later than the receive time; strictly increasing as long as that allows
            stamp = min(max(self._off0 + dev + self._a + self._b * dev, self._last_stamp + 1e-6), host)
            self._last_stamp = stamp
            out.append(stamp)
        return out

    def _observe(self, t_us: int, host: float) -> float:
        """Update the envelope with one frame; returns its unwrapped device time (s)."""
        if self._last_raw is None:
            self._off0 = host  # relative offsets stay near zero (float precision)
        else:
            delta = (t_us - self._last_raw) % TIME_MOD
            if delta >= TIME_MOD // 2:  # went backwards: the device restarted
                self.reset()
                return self._observe(t_us, host)
            self._dev_us += delta
        self._last_raw = t_us
        dev = self._dev_us * 1e-6
        self._dev = dev
        rel = host - self._off0 - dev
        self.samples += 1

        if self._block_min is None:
            self._block_start, self._block_min = dev, (dev, rel)
            self._fit()
        elif dev - self._block_start >= self.block_s:
            self._close_block()
            self._block_start, self._block_min = dev, (dev, rel)
            self._fit()
        elif rel < self._block_min[1]:
            self._block_min = (dev, rel)
        # the line never lies above a sample: a frame cannot be received before it was captured
        self._a = min(self._a, rel - self._b * dev)
        return dev

    def _close_block(self) -> None:
        assert self._block_min is not None
        if self._blocks:
            predicted = self._a + self._b * self._block_min[0]
            if self._block_min[1] - predicted > self.jump_s:  # the whole block arrived far later: clock step
                self._blocks.clear()
                self.resets += 1
        self._blocks.append(self._block_min)

    def _fit(self) -> None:
        points = list(self._blocks)  # closed blocks only: a just-started block's "minimum" is one sample
        if len(points) >= 4:  # enough span for a slope: least squares through the block minima
            n = len(points)
            mx = sum(p[0] for p in points) / n
            my = sum(p[1] for p in points) / n
            sxx = sum((p[0] - mx) ** 2 for p in points)
            sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
            b = sxy / sxx if sxx > 0 else 0.0
            self._b = min(max(b, -self.max_slope), self.max_slope)
        if self._block_min is not None:
            points.append(self._block_min)
        self._a = min(p[1] - self._b * p[0] for p in points)

    # -- diagnostics ----------------------------------------------------------------------------
    @property
    def offset(self) -> float:
        """Current host - device clock offset in seconds (including the minimum transport delay)."""
        return self._off0 + self._a + self._b * self._dev

    @property
    def drift_ppm(self) -> float:
        """How much faster the host clock runs than the device's, in parts per million."""
        return self._b * 1e6
