"""The pick_place task: randomised cube/target layout, contact-based grasp and success checks.

Everything random comes from a numpy Generator seeded per reset, so a seed reproduces the layout.
Success is a pure function of the physics state (checked once per control step by the caller):
cube centre within `SUCCESS_RADIUS` of the target centre, lying flat on the table, nearly at rest,
and not held by both fingers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import mujoco

from robot_rl.sim.scene import CUBE_HALF

# reachable annulus sector in front of the robot (base at the origin)
RADIUS = (0.16, 0.30)
BEARING = (-0.7, 0.7)  # rad
MIN_SEPARATION = 0.08  # cube <-> target centres
SUCCESS_RADIUS = 0.02
ON_TABLE_TOL = 0.004  # cube centre at most this far above its resting height
REST_SPEED = 0.05  # m/s


@dataclass
class Layout:
    cube_xy: tuple[float, float]
    cube_yaw: float
    target_xy: tuple[float, float]


def _polar(rng: np.random.Generator) -> np.ndarray:
    r = rng.uniform(*RADIUS)
    b = rng.uniform(*BEARING)
    return np.array([r * math.cos(b), r * math.sin(b)])


class PickPlaceTask:
    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self._cube_q = model.joint("cube").qposadr[0]
        self._cube_v = model.joint("cube").dofadr[0]
        self._cube_geom = model.geom("cube").id
        self._cube_body = model.body("cube").id
        self._target_mocap = model.body("target").mocapid[0]
        self._left = model.body("left_finger").id
        self._right = model.body("right_finger").id

    def sample(self, rng: np.random.Generator) -> Layout:
        cube = _polar(rng)
        for _ in range(1000):
            target = _polar(rng)
            if np.linalg.norm(target - cube) >= MIN_SEPARATION:
                break
        else:  # unreachable with the constants above; kept so a bad edit fails loudly
            raise RuntimeError("could not place the target away from the cube")
        return Layout(tuple(cube), float(rng.uniform(-math.pi / 4, math.pi / 4)), tuple(target))

    def apply(self, data: mujoco.MjData, layout: Layout) -> None:
        """Put the cube (at rest, on the table) and the target marker where `layout` says."""
        a = self._cube_q
        data.qpos[a:a + 3] = [layout.cube_xy[0], layout.cube_xy[1], CUBE_HALF]
        h = layout.cube_yaw / 2
        data.qpos[a + 3:a + 7] = [math.cos(h), 0.0, 0.0, math.sin(h)]
        data.qvel[self._cube_v:self._cube_v + 6] = 0.0
        data.mocap_pos[self._target_mocap] = [layout.target_xy[0], layout.target_xy[1], 0.0]

    def set_cube(self, data: mujoco.MjData, pos, yaw: float = 0.0) -> None:
        """Teleport the cube (tests, scripted resets)."""
        a = self._cube_q
        data.qpos[a:a + 3] = pos
        data.qpos[a + 3:a + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        data.qvel[self._cube_v:self._cube_v + 6] = 0.0

    def cube_pos(self, data: mujoco.MjData) -> np.ndarray:
        return data.qpos[self._cube_q:self._cube_q + 3].copy()

    def target_pos(self, data: mujoco.MjData) -> np.ndarray:
        return data.mocap_pos[self._target_mocap].copy()

    def finger_contacts(self, data: mujoco.MjData) -> tuple[bool, bool]:
        """Whether the left / right finger touches the cube."""
        n = data.ncon
        if n == 0:
            return False, False
        g = data.contact.geom[:n]
        bodies = self.model.geom_bodyid[g]
        with_cube = (g == self._cube_geom).any(axis=1)
        other = np.where(g[:, 0] == self._cube_geom, bodies[:, 1], bodies[:, 0])[with_cube]
        return bool((other == self._left).any()), bool((other == self._right).any())

    def grasped(self, data: mujoco.MjData) -> bool:
        left, right = self.finger_contacts(data)
        return left and right

    def success(self, data: mujoco.MjData) -> bool:
        cube = self.cube_pos(data)
        target = self.target_pos(data)
        near = math.hypot(cube[0] - target[0], cube[1] - target[1]) <= SUCCESS_RADIUS
        on_table = cube[2] <= CUBE_HALF + ON_TABLE_TOL
        still = float(np.linalg.norm(data.qvel[self._cube_v:self._cube_v + 3])) < REST_SPEED
        return bool(near and on_table and still and not self.grasped(data))

    def state(self, data: mujoco.MjData) -> dict:
        a = self._cube_q
        return {
            "cube_pos": [float(v) for v in data.qpos[a:a + 3]],
            "cube_quat": [float(v) for v in data.qpos[a + 3:a + 7]],
            "target_pos": [float(v) for v in self.target_pos(data)],
            "success": self.success(data),
            "grasped": self.grasped(data),
        }
