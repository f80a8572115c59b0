"""Forward kinematics of a profile's `kinematics:` chain (numpy; see robot_rl/config/kinematics.py)."""
from __future__ import annotations

import numpy as np

from robot_rl.calibration.files import CalibrationError
from robot_rl.calibration.geometry import axis_angle, make_T, rpy_matrix
from robot_rl.config.kinematics import KinematicsSpec


class ChainFK:
    """Frame poses in the base frame from joint positions given in the profile's joint order."""

    def __init__(self, spec: KinematicsSpec, joint_names: list[str]):
        self.spec = spec
        self.joint_names = list(joint_names)
        self._fixed = [make_T(rpy_matrix(link.rpy), link.xyz) for link in spec.chain]
        self._index = [self.joint_names.index(link.joint) if link.joint else -1 for link in spec.chain]
        self._axes = [np.asarray(link.axis, np.float64) / np.linalg.norm(link.axis) for link in spec.chain]

    @classmethod
    def of(cls, profile) -> "ChainFK":
        if not profile.kinematics.described:
            raise CalibrationError(f"profile {profile.name!r} has no 'kinematics:' section; describe the arm's chain "
                                   "there (see hardware/profiles/sim.yaml) to calibrate hand-eye")
        return cls(profile.kinematics, profile.robot.joint_names)

    def poses(self, q) -> dict[str, np.ndarray]:
        """T_base_frame for every frame of the chain."""
        q = np.asarray(q, np.float64)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"expected {len(self.joint_names)} joint positions ({', '.join(self.joint_names)}), "
                             f"got shape {q.shape}")
        T = np.eye(4)
        out = {}
        for link, fixed, idx, axis in zip(self.spec.chain, self._fixed, self._index, self._axes):
            T = T @ fixed
            if idx >= 0:
                motion = (make_T(axis_angle(axis, q[idx]), np.zeros(3)) if link.type == "revolute"
                          else make_T(np.eye(3), axis * q[idx]))
                T = T @ motion
            out[link.name] = T
        return out

    def frame(self, q, name: str | None = None) -> np.ndarray:
        """T_base_<name> (default: the flange)."""
        name = name or self.spec.flange_frame
        poses = self.poses(q)
        if name not in poses:
            raise KeyError(f"no frame {name!r} in the chain ({', '.join(poses)})")
        return poses[name]
