"""Camera calibration files: `calibration/<profile name>/<camera>.yaml` overrides device intrinsics.

The format (written by the calibration tools, read here; see hardware/cameras/README.md):

    width: 640                      # image size the calibration was made at (must match the profile)
    height: 480
    camera_matrix: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortion_coefficients: [k1, k2, p1, p2, k3]   # OpenCV order
    distortion_model: plumb_bob     # plumb_bob (5) | rational_polynomial (8) | equidistant (4)
    meta: {}                        # optional free-form provenance (board, rms error, date, ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robot_rl.config.typed import ConfigError, check, load_file
from robot_rl.drivers.realsense.frames import Intrinsics
from robot_rl.paths import calibration_dir

N_COEFFS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass
class CameraCalibration:
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

    def intrinsics(self, source: str = "") -> Intrinsics:
        k = self.camera_matrix
        return Intrinsics(self.width, self.height, float(k[0][0]), float(k[1][1]), float(k[0][2]), float(k[1][2]),
                          tuple(float(c) for c in self.distortion_coefficients), self.distortion_model, source)


def calibration_path(profile_name: str, camera: str) -> Path:
    return calibration_dir() / profile_name / f"{camera}.yaml"


def load_calibration(profile_name: str, camera: str, width: int, height: int) -> Intrinsics | None:
    """The calibrated intrinsics of `camera`, or None when no file exists.

    A malformed file, or one made at another resolution than the camera streams, is a ConfigError
    naming the file: silently falling back to device intrinsics would hide a broken calibration.
    """
    path = calibration_path(profile_name, camera)
    if not path.is_file():
        return None
    calib = load_file(CameraCalibration, path)
    if (calib.width, calib.height) != (width, height):
        raise ConfigError(f"calibrated at {calib.width}x{calib.height} but camera {camera!r} streams at "
                          f"{width}x{height}; recalibrate or fix the profile", "width", path)
    return calib.intrinsics(source=str(path))
