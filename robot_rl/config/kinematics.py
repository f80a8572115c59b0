"""The arm's kinematic description in a profile (`kinematics:`), URDF-style but flat.

A serial chain of frames from the robot base to the flange (and beyond, e.g. a tcp). Each frame is
placed in the previous one by a fixed transform (xyz, then fixed-axis roll/pitch/yaw as in URDF),
followed by the motion of its joint (a profile joint, rotating or sliding along `axis` in the frame
itself). That is enough for the sim arm and Koch-style arms, and keeps the FK a few lines of numpy
(robot_rl/calibration/kinematics.py). Hand-eye calibration reports the camera in the `flange` frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from robot_rl.config.typed import check


def _vec3(v: list[float], name: str) -> None:
    check(len(v) == 3 and all(math.isfinite(x) for x in v), f"must be 3 finite numbers, got {v}", name)


@dataclass
class LinkSpec:
    """One frame of the chain: parent -> this frame = Trans(xyz) * Rot(rpy) * joint motion."""

    name: str
    xyz: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # m, in the parent frame
    rpy: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # rad, fixed axes x, y, z (URDF)
    joint: str = ""  # profile joint that moves this frame; "" = a fixed frame (e.g. a tcp)
    axis: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])  # in this frame
    type: Literal["revolute", "prismatic"] = "revolute"

    def validate(self) -> None:
        check(bool(self.name), "every frame needs a name", "name")
        _vec3(self.xyz, "xyz")
        _vec3(self.rpy, "rpy")
        _vec3(self.axis, "axis")
        check(math.hypot(*self.axis) > 1e-9, "must not be the zero vector", "axis")


@dataclass
class KinematicsSpec:
    """Serial chain base -> ... -> flange; joint values are the profile's joint positions (rad / m).
    An empty chain (the default: no `kinematics:` section) means the arm is not described."""

    chain: list[LinkSpec] = field(default_factory=list)
    base_frame: str = "base"
    flange: str = ""  # the frame hand-eye calibration refers to; "" = the last frame of the chain

    def validate(self) -> None:
        check(len(self.chain) > 0 or not self.flange, "a flange needs a chain of frames", "chain")
        names = [link.name for link in self.chain]
        dup = sorted({n for n in names if names.count(n) > 1} | ({self.base_frame} & set(names)))
        check(not dup, f"duplicate frame name(s): {', '.join(dup)}", "chain")
        joints = [link.joint for link in self.chain if link.joint]
        dup = sorted({j for j in joints if joints.count(j) > 1})
        check(not dup, f"joint(s) used by more than one frame: {', '.join(dup)}", "chain")
        check(not self.flange or self.flange in names,
              f"{self.flange!r} is not a frame of the chain ({', '.join(names)})", "flange")

    @property
    def described(self) -> bool:
        return bool(self.chain)

    @property
    def flange_frame(self) -> str:
        return self.flange or self.chain[-1].name

    def check_joints(self, joint_names: list[str]) -> None:
        """Every chain joint must be a profile joint (called from Profile.validate)."""
        for i, link in enumerate(self.chain):
            check(not link.joint or link.joint in joint_names,
                  f"{link.joint!r} is not a robot joint ({', '.join(joint_names)})", f"kinematics.chain[{i}].joint")
