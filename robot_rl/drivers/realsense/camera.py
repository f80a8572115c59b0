"""One RealSense camera kept streaming: open, read, and on loss retry with capped exponential back-off.

The node calls `run()` in a worker thread; it returns only after `stop()`. A missing device, a
disconnect or a stall (no frames for `stall_periods` frame periods) never ends it: the error is
logged with what to check, and the camera is reopened until it comes back.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from robot_rl.config.profile import CameraSpec
from robot_rl.drivers.realsense.device import CameraError, DeviceInfo, Log, Session, open_session
from robot_rl.drivers.realsense.frames import CameraFrame, FrameConverter, Intrinsics

_logger = logging.getLogger("robot_rl.realsense")

CONNECTING, STARTING, STREAMING, WAITING, FINISHED, STOPPED = (
    "connecting", "starting", "streaming", "waiting_for_device", "playback_finished", "stopped")


def _default_log(level: str, message: str) -> None:
    _logger.log({"info": logging.INFO, "warn": logging.WARNING}.get(level, logging.ERROR), message)


def backoff_delays(first_s: float, max_s: float):
    """first, 2*first, 4*first, ... capped at max_s (forever)."""
    delay = min(first_s, max_s)
    while True:
        yield delay
        delay = min(delay * 2.0, max_s)


class RealSenseCamera:
    def __init__(self, spec: CameraSpec, *, playback_file: str = "", loop: bool = True,
                 calibration: Intrinsics | None = None, retry_min_s: float = 0.5, retry_max_s: float = 10.0,
                 stall_periods: int = 30, first_frame_timeout_s: float = 5.0, log: Log = _default_log,
                 opener: Callable[[], Session] | None = None):
        self.spec, self.calibration, self.log = spec, calibration, log
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.stall_s = max(stall_periods / spec.fps, 0.2)
        self.first_frame_timeout_s = first_frame_timeout_s
        self.open = opener or (lambda: open_session(spec, playback_file, loop, log))
        self.converter = FrameConverter(calibration, spec.fps, spec.depth)
        self.state = CONNECTING
        self.device: DeviceInfo | None = None
        self.retries = 0
        self.last_error = ""
        self._arrivals: deque[float] = deque(maxlen=max(8, int(spec.fps * 4)))
        self._stop = threading.Event()

    # -- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self, on_frame: Callable[[CameraFrame], None]) -> None:
        """Stream frames into `on_frame` (in this thread) until stop(), reopening the device as needed."""
        delays = backoff_delays(self.retry_min_s, self.retry_max_s)
        while not self.stopped:
            self.state = CONNECTING
            try:
                session = self.open()
            except RuntimeError as e:  # CameraError, DeviceNotFound and librealsense's own errors
                self._retry_after(e, next(delays), WAITING)
                continue
            frames_before, error = self.converter.stats.frames, None
            try:
                self._stream(session, on_frame)  # errors of on_frame itself propagate
            except CameraError as e:
                error = e
            finally:
                session.close()
            if self.stopped:
                break
            if self.converter.stats.frames > frames_before:
                delays = backoff_delays(self.retry_min_s, self.retry_max_s)  # it worked: start over
            self._retry_after(error or CameraError("stream ended"), next(delays), CONNECTING)
        self.state = STOPPED

    def _retry_after(self, error: Exception, delay: float, state: str) -> None:
        self.retries += 1
        self.state, self.last_error = state, str(error)
        self.log("error", f"camera {self.spec.name}: {error}; retrying in {delay:.1f} s (retry {self.retries})")
        self._stop.wait(delay)

    def _stream(self, session: Session, on_frame: Callable[[CameraFrame], None]) -> None:
        """Read until stop (or the end of a non-looping playback); CameraError on loss or stall."""
        self.device, self.state = session.device, STARTING
        intrinsics = self.calibration or session.intrinsics
        self.converter.restart(intrinsics, session.depth_scale)
        self.log("info", f"camera {self.spec.name}: opened {session.device}; intrinsics from {intrinsics.source}")
        got_frames = False
        last = time.monotonic()
        while not self.stopped:
            try:
                frameset = session.read(0.25)
                frame = self.converter.convert(frameset) if frameset is not None else None
            except RuntimeError as e:  # librealsense: device gone mid-read, a broken frame
                raise CameraError(f"reading frames failed: {e}") from None
            now = time.monotonic()
            if frameset is None:
                if session.finished():
                    self.state = FINISHED
                    self._stop.wait()
                    return
                limit = self.stall_s if got_frames else self.first_frame_timeout_s
                if now - last > limit:
                    periods = (now - last) * self.spec.fps
                    raise CameraError(f"no frames for {now - last:.1f} s ({periods:.0f} frame periods): device lost "
                                      f"or stalled")
                continue
            last = now
            if frame is None:
                continue
            got_frames, self.state, self.last_error = True, STREAMING, ""
            self._arrivals.append(now)
            on_frame(frame)

    # -- health ---------------------------------------------------------------------------------
    def fps(self, window_s: float = 2.0) -> float:
        """Frames per second delivered over the last `window_s` (0 when none)."""
        now = time.monotonic()
        recent = [t for t in list(self._arrivals) if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def diagnostics(self) -> dict:
        s = self.converter.stats
        return {"state": self.state, "device": str(self.device or ""), "fps": round(self.fps(), 2),
                "frames": s.frames, "drops": s.drops, "restarts": s.restarts, "unpaired_depth": s.unpaired_depth,
                "retries": self.retries, "last_error": self.last_error,
                "intrinsics": self.converter.intrinsics.source if self.converter.intrinsics else ""}
