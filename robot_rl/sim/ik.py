"""Closed-form inverse kinematics for the sim arm with the gripper pointing straight down.

The arm is planar after the waist (every link offset lies in the waist's x-z plane), so "tcp at p,
pointing down, fingers closing along yaw psi" has an exact solution: waist = atan2(y, x), a two-link
solve for shoulder/elbow, wrist_pitch making the pitch sum pi/2, and wrist_roll setting the finger
axis. Closed form is exact and deterministic, which the expert and the tests rely on; link lengths
are read from the compiled model so they cannot drift from the MJCF.
"""
from __future__ import annotations

import math

import numpy as np

import mujoco


def wrap_quarter(a: float) -> float:
    """Wrap an angle to [-pi/4, pi/4) (a cube looks the same every quarter turn)."""
    return (a + math.pi / 4) % (math.pi / 2) - math.pi / 4


def quat_yaw(q) -> float:
    """Yaw (rotation about world z) of a w,x,y,z quaternion."""
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class ArmIK:
    """Gripper-down IK; `solve` returns the 5 arm joints (no gripper)."""

    def __init__(self, model: mujoco.MjModel):
        def body_pos(name):
            return np.array(model.body(name).pos)

        self.model = model
        self.shoulder_z = float(body_pos("waist_link")[2] + body_pos("upper_arm")[2])
        self.l1 = float(body_pos("forearm")[2])  # upper arm along +z
        self.l2 = float(body_pos("wrist")[0])  # forearm along +x
        self.l3 = float(body_pos("hand")[0] + model.site("tcp").pos[0])  # wrist_pitch axis -> tcp
        names = ["waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll"]
        self.lower = np.array([model.joint(n).range[0] for n in names])
        self.upper = np.array([model.joint(n).range[1] for n in names])

    def roll_for_yaw(self, waist: float, yaw: float, near: float = 0.0) -> float:
        """wrist_roll that makes the fingers close along `yaw` (mod pi/2), choosing the solution
        nearest `near` so the wrist does not flip between equivalent grasps."""
        base = waist - yaw  # finger axis yaw = waist + pi/2 - roll; equivalent every pi/2
        k = round((near - base) / (math.pi / 2))
        return base + k * (math.pi / 2)

    def solve(self, pos, yaw: float | None = None, roll: float | None = None, roll_near: float = 0.0) -> np.ndarray:
        """Joint angles placing the tcp at `pos` (world, m) pointing down. Give either `yaw` (finger
        closing direction, any quarter turn) or an explicit `roll`. Unreachable points are clamped to
        the nearest reachable configuration along the same direction; joints are clipped to limits."""
        x, y, z = (float(v) for v in pos)
        waist = math.atan2(y, x) if math.hypot(x, y) > 1e-6 else 0.0
        r = math.hypot(x, y)
        wx, wz = r, z + self.l3 - self.shoulder_z  # wrist_pitch axis relative to the shoulder
        d = math.hypot(wx, wz)
        d = min(max(d, abs(self.l1 - self.l2) + 1e-6), self.l1 + self.l2 - 1e-6)
        cos_a = (self.l1 ** 2 + d ** 2 - self.l2 ** 2) / (2 * self.l1 * d)
        a1 = math.atan2(wz, wx) + math.acos(max(-1.0, min(1.0, cos_a)))  # upper-arm elevation (elbow up)
        ex, ez = self.l1 * math.cos(a1), self.l1 * math.sin(a1)
        a2 = math.atan2(wz - ez, wx - ex)  # forearm elevation
        shoulder = math.pi / 2 - a1
        elbow = -a2 - shoulder
        pitch = math.pi / 2 + a2
        if roll is None:
            roll = self.roll_for_yaw(waist, yaw if yaw is not None else waist, roll_near)
        q = np.array([waist, shoulder, elbow, pitch, roll])
        return np.clip(q, self.lower, self.upper)


def tcp_pose(model: mujoco.MjModel, data: mujoco.MjData, q_arm) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics (tcp position, hand rotation matrix) for arm joints `q_arm`; uses `data`
    as scratch, so pass a private MjData."""
    for name, v in zip(["waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll"], q_arm):
        data.qpos[model.joint(name).qposadr[0]] = v
    mujoco.mj_kinematics(model, data)
    return data.site("tcp").xpos.copy(), data.body("hand").xmat.reshape(3, 3).copy()
