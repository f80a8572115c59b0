"""pyrealsense2 framesets -> plain numpy frames: aligned depth in mm, capture stamps, drop counting.

Everything here works on real `rs.frame` objects but needs no device, so unit tests drive it with
frames from an `rs.software_device`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyrealsense2 as rs

# librealsense distortion model -> (ROS CameraInfo model, number of coefficients it uses)
_DISTORTION = {
    rs.distortion.none: ("plumb_bob", 5),
    rs.distortion.brown_conrady: ("plumb_bob", 5),  # k1 k2 p1 p2 k3, the OpenCV order
    rs.distortion.modified_brown_conrady: ("plumb_bob", 5),
    rs.distortion.inverse_brown_conrady: ("plumb_bob", 5),
    rs.distortion.kannala_brandt4: ("equidistant", 4),
    rs.distortion.ftheta: ("equidistant", 4),
}


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the color stream (aligned depth shares them)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    distortion_model: str = "plumb_bob"
    source: str = "device"  # "device" or the calibration file it came from

    @classmethod
    def from_rs(cls, intr: "rs.intrinsics") -> "Intrinsics":
        model, n = _DISTORTION.get(intr.model, ("plumb_bob", 5))
        coeffs = tuple(float(c) for c in list(intr.coeffs)[:n])
        if intr.model == rs.distortion.none:
            coeffs = (0.0,) * 5
        return cls(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy), float(intr.ppx),
                   float(intr.ppy), coeffs, model)

    def camera_info_kwargs(self) -> dict:
        """Keyword arguments for `robot_rl.ros.convert.camera_info_msg` (the node's one call)."""
        return dict(width=self.width, height=self.height, fx=self.fx, fy=self.fy, cx=self.cx, cy=self.cy,
                    distortion=list(self.distortion), distortion_model=self.distortion_model)


@dataclass
class CameraFrame:
    """One color image (and its aligned depth) at its capture time."""

    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None  # (H, W) uint16 millimetres aligned to color; None = no depth this frame
    stamp: float  # capture time, host epoch seconds
    frame_number: int  # the color sensor's frame counter
    intrinsics: Intrinsics


class StampClock:
    """Device timestamps (ms) -> host epoch seconds.

    Global time (librealsense maps the device clock onto the host clock) and system time are host
    epoch ms already. A bare hardware clock (global time unsupported) gets a host offset: the
    smallest host-arrival minus device-time seen, i.e. the least-delayed frame's arrival, so the
    stamp stays the capture time rather than the (jittery) arrival time.
    """

    HOST_DOMAINS = (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)

    def __init__(self, now=time.time):
        self._now = now
        self._offset_ms: float | None = None
        self._last_hw_ms: float | None = None

    def reset(self) -> None:
        self._offset_ms = self._last_hw_ms = None

    def seconds(self, frame: "rs.frame") -> float:
        ts = float(frame.get_timestamp())
        if frame.get_frame_timestamp_domain() in self.HOST_DOMAINS:
            return ts / 1000.0
        if self._last_hw_ms is not None and ts < self._last_hw_ms:
            self._offset_ms = None  # device clock restarted
        self._last_hw_ms = ts
        offset = self._now() * 1000.0 - ts
        self._offset_ms = offset if self._offset_ms is None else min(self._offset_ms, offset)
        return (ts + self._offset_ms) / 1000.0


@dataclass
class FrameStats:
    frames: int = 0  # frames converted
    drops: int = 0  # frames missing from the color frame counter
    restarts: int = 0  # frame counter went backwards (device reset, playback looped): not drops
    unpaired_depth: int = 0  # depth missing or too far in time from its color frame
    last_stamp: float = math.nan


@dataclass
class FrameConverter:
    """Turns one pipeline/syncer frameset into a CameraFrame, counting drops from frame numbers."""

    intrinsics: Intrinsics | None
    fps: float
    depth: bool = True
    depth_scale: float = 0.001  # metres per raw unit, used when a frame does not carry its own
    stats: FrameStats = field(default_factory=FrameStats)
    clock: StampClock = field(default_factory=StampClock)

    def __post_init__(self):
        self._align = rs.align(rs.stream.color) if self.depth else None
        self._last_number: int | None = None
        self._last_color_ts: float | None = None

    def restart(self, intrinsics: Intrinsics | None = None, depth_scale: float | None = None) -> None:
        """A new device session: frame counters and device clocks start over."""
        self._last_number = self._last_color_ts = None
        self.clock.reset()
        self.intrinsics = intrinsics or self.intrinsics
        self.depth_scale = depth_scale or self.depth_scale

    def convert(self, frameset: "rs.composite_frame") -> CameraFrame | None:
        """The frame, or None when the set has no new color frame (a depth-only set, a repeat)."""
        color = frameset.get_color_frame()
        if not color or self.intrinsics is None:
            return None
        number, ts = int(color.get_frame_number()), float(color.get_timestamp())
        if number == self._last_number and ts == self._last_color_ts:
            return None  # the syncer re-sent the same color frame with another depth frame
        self._count(number)
        self._last_color_ts = ts
        depth_mm = self._depth_mm(frameset, color) if self.depth else None
        stamp = self.clock.seconds(color)
        self.stats.frames += 1
        self.stats.last_stamp = stamp
        return CameraFrame(np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True),
                           depth_mm, stamp, number, self.intrinsics)

    def _count(self, number: int) -> None:
        if self._last_number is not None:
            if number > self._last_number + 1:
                self.stats.drops += number - self._last_number - 1
            elif number <= self._last_number:
                self.stats.restarts += 1
        self._last_number = number

    def _depth_mm(self, frameset, color) -> np.ndarray | None:
        depth = frameset.get_depth_frame()
        half_period_ms = 500.0 / self.fps
        if not depth or depth.get_frame_timestamp_domain() != color.get_frame_timestamp_domain() \
                or abs(depth.get_timestamp() - color.get_timestamp()) > half_period_ms:
            self.stats.unpaired_depth += 1
            return None
        aligned = self._align.process(frameset).get_depth_frame()
        raw = np.asanyarray(aligned.get_data())
        scale_mm = (aligned.get_units() or self.depth_scale) * 1000.0
        if abs(scale_mm - 1.0) < 1e-6:
            return np.array(raw, dtype=np.uint16, copy=True)
        return np.clip(np.rint(raw * scale_mm), 0, 65535).astype(np.uint16)
