"""Rigid transforms as 4x4 numpy arrays.

Conventions: T_a_b maps points in frame b to frame a (so T_base_cam is the camera pose in the base
frame); camera frames are OpenCV optical frames (x right, y down, z forward); quaternions are
written in ROS order (x, y, z, w).
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def make_T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.ravel(t)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def from_rvec(rvec, tvec) -> np.ndarray:
    return make_T(cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))[0], tvec)


def to_rvec(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))[0].ravel(), T[:3, 3].copy()


def axis_angle(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)[0]


def rpy_matrix(rpy) -> np.ndarray:
    """URDF fixed-axis roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    return axis_angle((0, 0, 1), y) @ axis_angle((0, 1, 0), p) @ axis_angle((1, 0, 0), r)


def rotation_angle_deg(R: np.ndarray) -> float:
    c = (np.trace(R[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def pose_error(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(translation error in m, rotation error in degrees) between two poses."""
    return float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3])), rotation_angle_deg(T_est[:3, :3].T @ T_true[:3, :3])


def quat_xyzw(R: np.ndarray) -> list[float]:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix."""
    m = R[:3, :3]
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2.0
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2.0, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2.0, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2.0, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return (q / np.linalg.norm(q)).tolist()


def quat_matrix(q_xyzw) -> np.ndarray:
    x, y, z, w = np.asarray(q_xyzw, np.float64) / np.linalg.norm(q_xyzw)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
