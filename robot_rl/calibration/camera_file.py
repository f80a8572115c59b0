"""Camera calibration files `calibration/<setup>/<camera>.yaml`: the one definition of the format
(width, height, camera_matrix, distortion_coefficients, distortion_model, meta), written by the
calibration tools and read by the sim node and the RealSense camera node. Free of pyrealsense2, whose
bundled Fast DDS must never load before rclpy's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_rl.calibration.files import write_yaml
from robot_rl.config.typed import ConfigError, check, load_file
from robot_rl.paths import calibration_dir

N_COEFFS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass
class CameraFile:
    width: int
    height: int
    camera_matrix: list[list[float]]
    distortion_coefficients: list[float]
    distortion_model: Literal["plumb_bob", "rational_polynomial", "equidistant"] = "plumb_bob"
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check(self.width > 0 and self.height > 0, f"size {self.width}x{self.height} must be positive", "width")
        k = self.camera_matrix
        check(len(k) == 3 and all(len(row) == 3 for row in k), "must be a 3x3 list of rows", "camera_matrix")
        check(k[0][0] > 0 and k[1][1] > 0, f"fx and fy must be positive, got {k[0][0]}, {k[1][1]}", "camera_matrix")
        check(k[0][1] == 0 and k[1][0] == 0 and k[2] == [0, 0, 1],
              "must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)", "camera_matrix")
        n = N_COEFFS[self.distortion_model]
        check(len(self.distortion_coefficients) == n,
              f"{self.distortion_model} needs {n} coefficients, got {len(self.distortion_coefficients)}",
              "distortion_coefficients")

    @property
    def fx_fy_cx_cy(self) -> tuple[float, float, float, float]:
        k = self.camera_matrix
        return float(k[0][0]), float(k[1][1]), float(k[0][2]), float(k[1][2])


def camera_file_path(setup: str, camera: str) -> Path:
    return calibration_dir() / setup / f"{camera}.yaml"


def load_camera_file(setup: str, camera: str, width: int, height: int) -> CameraFile | None:
    """The calibration of `camera`, or None without a file; a malformed file or one made at another
    resolution is a ConfigError naming the file (a silent fallback would hide a broken calibration)."""
    path = camera_file_path(setup, camera)
    if not path.is_file():
        return None
    calib = load_file(CameraFile, path)
    if (calib.width, calib.height) != (width, height):
        raise ConfigError(f"calibrated at {calib.width}x{calib.height} but camera {camera!r} streams at "
                          f"{width}x{height}; recalibrate or fix the profile", "width", path)
    return calib


def write_camera_file(path: str | Path, width: int, height: int, camera_matrix: np.ndarray, distortion,
                      distortion_model: str = "plumb_bob", meta: dict | None = None) -> Path:
    """Validate, then write atomically."""
    k = np.asarray(camera_matrix, np.float64)
    data = CameraFile(int(width), int(height),
                      [[round(float(k[0, 0]), 4), 0.0, round(float(k[0, 2]), 4)],
                       [0.0, round(float(k[1, 1]), 4), round(float(k[1, 2]), 4)], [0.0, 0.0, 1.0]],
                      [round(float(c), 8) for c in np.ravel(distortion)], distortion_model, dict(meta or {}))
    data.validate()
    return write_yaml(path, {"width": data.width, "height": data.height, "camera_matrix": data.camera_matrix,
                             "distortion_coefficients": data.distortion_coefficients,
                             "distortion_model": data.distortion_model, "meta": data.meta},
                      header="camera intrinsics (OpenCV pinhole + distortion), written by robot-rl calibrate camera")
