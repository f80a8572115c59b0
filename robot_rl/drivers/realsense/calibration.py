"""Camera calibration files override device intrinsics: `calibration/<profile name>/<camera>.yaml`.

The file format (width, height, camera_matrix, distortion_coefficients, distortion_model, meta) is
defined once, in robot_rl/calibration/camera_file.py, which the calibration tools write with; this
module only turns it into the driver's Intrinsics.
"""
from __future__ import annotations

from robot_rl.calibration.camera_file import CameraFile as CameraCalibration
from robot_rl.calibration.camera_file import camera_file_path as calibration_path
from robot_rl.calibration.camera_file import load_camera_file
from robot_rl.drivers.realsense.frames import Intrinsics

__all__ = ["CameraCalibration", "calibration_path", "load_calibration"]


def load_calibration(profile_name: str, camera: str, width: int, height: int) -> Intrinsics | None:
    """The calibrated intrinsics of `camera`, or None when no file exists.

    A malformed file, or one made at another resolution than the camera streams, is a ConfigError
    naming the file: silently falling back to device intrinsics would hide a broken calibration.
    """
    calib = load_camera_file(profile_name, camera, width, height)
    if calib is None:
        return None
    fx, fy, cx, cy = calib.fx_fy_cx_cy
    return Intrinsics(calib.width, calib.height, fx, fy, cx, cy,
                      tuple(float(c) for c in calib.distortion_coefficients), calib.distortion_model,
                      str(calibration_path(profile_name, camera)))
