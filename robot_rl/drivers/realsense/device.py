"""Opening a RealSense stream: device lookup by serial (or a recorded .db3), sensor options, pipeline.

Live devices and playback files go through the same `rs.pipeline`, so tests that play a recording
exercise the path a real camera takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyrealsense2 as rs

from robot_rl.config.profile import CameraSpec
from robot_rl.drivers.realsense.frames import Intrinsics

Log = Callable[[str, str], None]  # (level, message): "info" | "warn" | "error"


class CameraError(RuntimeError):
    """The camera cannot be opened or stopped streaming; the message says what to check."""


class DeviceNotFound(CameraError):
    def __init__(self, serial: str, connected: list["DeviceInfo"]):
        self.serial, self.connected = serial, connected
        listing = "; ".join(str(d) for d in connected) or "none"
        wanted = f"RealSense with serial {serial!r} is not connected" if serial else "no RealSense is connected"
        super().__init__(f"{wanted}; connected devices: {listing} (check the USB cable and the profile's "
                         f"cameras[].serial; `rs-enumerate-devices -s` lists serials)")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    serial: str
    firmware: str = ""
    usb: str = ""

    def __str__(self) -> str:
        extra = ", ".join(p for p in (f"fw {self.firmware}" if self.firmware else "",
                                      f"USB {self.usb}" if self.usb else "") if p)
        return f"{self.name} serial {self.serial}" + (f" ({extra})" if extra else "")

    @classmethod
    def of(cls, dev: "rs.device") -> "DeviceInfo":
        def info(key):
            return dev.get_info(key) if dev.supports(key) else ""

        return cls(info(rs.camera_info.name), info(rs.camera_info.serial_number),
                   info(rs.camera_info.firmware_version), info(rs.camera_info.usb_type_descriptor))


def list_devices(ctx: "rs.context | None" = None) -> list[DeviceInfo]:
    """Connected RealSense devices (what `rs-enumerate-devices -s` shows)."""
    return [DeviceInfo.of(d) for d in (ctx or rs.context()).query_devices()]


def find_device(serial: str, ctx: "rs.context | None" = None) -> DeviceInfo:
    """The connected device with `serial` ("" = the only/first one), else DeviceNotFound listing serials."""
    devices = list_devices(ctx)
    match = [d for d in devices if d.serial == serial] if serial else devices[:1]
    if not match:
        raise DeviceNotFound(serial, devices)
    return match[0]


def configure_sensors(device: "rs.device", spec: CameraSpec, log: Log) -> None:
    """Global time on; color exposure and white balance fixed from the profile unless it asks for auto.

    The D400 RGB sensor's exposure option counts 100 µs units (UVC); sensors that are not the
    separate "RGB Camera" (e.g. the D405's color from the stereo module) count µs.
    """
    sensors = device.query_sensors()
    for sensor in sensors:
        if sensor.supports(rs.option.global_time_enabled):
            sensor.set_option(rs.option.global_time_enabled, 1)

    def name(s):
        return s.get_info(rs.camera_info.name) if s.supports(rs.camera_info.name) else ""

    color = (next((s for s in sensors if name(s) == "RGB Camera" or s.is_color_sensor()), None)
             or next((s for s in sensors if s.is_depth_sensor()), None))  # D405: color from the stereo module
    if color is None:
        return
    rgb_camera = name(color) == "RGB Camera"
    _set(color, rs.option.enable_auto_exposure, 1.0 if spec.auto_exposure else 0.0, log)
    if not spec.auto_exposure:
        _set(color, rs.option.exposure, spec.exposure_us / 100.0 if rgb_camera else spec.exposure_us, log)
    _set(color, rs.option.enable_auto_white_balance, 1.0 if spec.auto_white_balance else 0.0, log)
    if not spec.auto_white_balance:
        _set(color, rs.option.white_balance, spec.white_balance_k, log)


def _set(sensor: "rs.sensor", option: "rs.option", value: float, log: Log) -> None:
    if not sensor.supports(option):
        log("warn", f"sensor does not support {option}; left as is")
        return
    r = sensor.get_option_range(option)
    clamped = min(max(value, r.min), r.max)
    if r.step > 0:
        clamped = min(r.min + round((clamped - r.min) / r.step) * r.step, r.max)
    if abs(clamped - value) > max(r.step, 1e-9):
        log("warn", f"{option} {value:g} is outside the sensor's range [{r.min:g}, {r.max:g}]; using {clamped:g}")
    sensor.set_option(option, clamped)


class Session:
    """One open pipeline: the device it found, its color intrinsics and depth scale, and framesets."""

    def __init__(self, pipeline: "rs.pipeline", device: DeviceInfo, intrinsics: Intrinsics, depth_scale: float,
                 playback: "rs.playback | None"):
        self.pipeline, self.device, self.intrinsics, self.depth_scale = pipeline, device, intrinsics, depth_scale
        self.playback = playback

    def read(self, timeout_s: float) -> "rs.composite_frame | None":
        """The next frameset, or None if none arrived within `timeout_s`."""
        ok, frameset = self.pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        return frameset if ok else None

    def finished(self) -> bool:
        """A non-looping playback reached its end."""
        return self.playback is not None and self.playback.current_status() == rs.playback_status.stopped

    def close(self) -> None:
        try:
            self.pipeline.stop()
        except RuntimeError:
            pass  # already stopped (device gone)


def open_session(spec: CameraSpec, playback_file: str = "", loop: bool = True,
                 log: Log = lambda level, msg: None) -> Session:
    """Start color (rgb8) + depth (z16) at the profile's mode on the device (by serial) or a recording."""
    fps = int(round(spec.fps))
    config = rs.config()
    if playback_file:
        if not Path(playback_file).is_file():
            raise CameraError(f"playback file not found: {playback_file}")
        config.enable_device_from_file(playback_file, repeat_playback=loop)
    else:
        config.enable_device(find_device(spec.serial).serial)
    config.enable_stream(rs.stream.color, spec.width, spec.height, rs.format.rgb8, fps)
    if spec.depth:
        config.enable_stream(rs.stream.depth, spec.width, spec.height, rs.format.z16, fps)
    pipeline = rs.pipeline()
    if spec.depth and not playback_file and not config.can_resolve(rs.pipeline_wrapper(pipeline)):
        # e.g. 1920x1080 color: depth tops out lower; it is aligned to color anyway, so any size will do
        config.disable_stream(rs.stream.depth)
        config.enable_stream(rs.stream.depth, rs.format.z16, fps)
        log("info", f"depth cannot stream at {spec.width}x{spec.height}; using the device's default size "
                    f"(aligned to color, so published at {spec.width}x{spec.height})")
    try:
        profile = pipeline.start(config)
    except RuntimeError as e:
        mode = f"color {spec.width}x{spec.height}@{fps} rgb8" + (" + depth z16" if spec.depth else "")
        source = f"playback file {playback_file}" if playback_file else f"device {spec.serial or '(first found)'}"
        raise CameraError(f"{source} cannot stream {mode}: {e}") from None
    try:
        device = profile.get_device()
        if not playback_file:
            configure_sensors(device, spec, log)
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        depth_scale = device.first_depth_sensor().get_depth_scale() if spec.depth else 0.001
        return Session(pipeline, DeviceInfo.of(device), Intrinsics.from_rs(color.get_intrinsics()), depth_scale,
                       device.as_playback() if playback_file else None)
    except Exception:
        pipeline.stop()
        raise
