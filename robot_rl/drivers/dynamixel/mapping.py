"""Servo ticks <-> profile joint values for one bus, from the profile's ServoSpecs.

joint = scale * servo_angle + bias, servo_angle = (tick - 2048) * 2*pi / 4096, where
scale, bias = direction, offset for a revolute joint, or the linear map of `servo_range` onto
[joint.lower, joint.upper] for a gripper. Servos are kept in profile joint order.
"""
from __future__ import annotations

import math

import numpy as np

from robot_rl.config.profile import DynamixelBusSpec, RobotSpec, ServoSpec
from robot_rl.config.typed import ConfigError
from robot_rl.drivers.dynamixel import protocol as p

RAD_PER_TICK = 2 * math.pi / p.TICKS_PER_TURN
RAD_S_PER_VELOCITY_UNIT = p.VELOCITY_UNIT_RPM * 2 * math.pi / 60.0
MODES = {"position": p.MODE_POSITION, "extended_position": p.MODE_EXTENDED_POSITION,
         "current_position": p.MODE_CURRENT_POSITION}
MULTI_TURN_TICKS = 1_048_575  # extended / current-based position range is +-256 turns


class JointMap:
    def __init__(self, bus: DynamixelBusSpec, robot: RobotSpec, role: str = "follower"):
        names = robot.joint_names
        self.role = role
        order = sorted(range(len(bus.servos)), key=lambda i: names.index(bus.servos[i].joint))
        self.servos: list[ServoSpec] = [bus.servos[i] for i in order]
        self.spec_index = order  # index of each (sorted) servo in the profile's servo list
        self.ids = [s.id for s in self.servos]
        self.joints = [s.joint for s in self.servos]
        self.joint_index = np.array([names.index(j) for j in self.joints])
        limits = {j.name: j for j in robot.joints}
        scale, bias = [], []
        for s in self.servos:
            if s.servo_range:
                j = limits[s.joint]
                k = (j.upper - j.lower) / (s.servo_range[1] - s.servo_range[0])
                scale.append(k)
                bias.append(j.lower - k * s.servo_range[0])
            else:
                scale.append(float(s.direction))
                bias.append(s.offset)
        self.scale, self.bias = np.array(scale), np.array(bias)
        self.modes = [MODES[s.mode] for s in self.servos]
        single = np.array([m == p.MODE_POSITION for m in self.modes])
        self.tick_min = np.where(single, 0, -MULTI_TURN_TICKS)
        self.tick_max = np.where(single, p.TICKS_PER_TURN - 1, MULTI_TURN_TICKS)
        self._check_reachable(limits)

    def _check_reachable(self, limits) -> None:
        """A joint range that maps outside the servo's tick range is a calibration error, not a clip."""
        for k, s in enumerate(self.servos):
            j = limits[s.joint]
            ticks = self.to_ticks_one(k, np.array([j.lower, j.upper]))
            lo, hi = int(min(ticks)), int(max(ticks))
            if lo < self.tick_min[k] or hi > self.tick_max[k]:
                raise ConfigError(
                    f"joint {s.joint} range [{j.lower}, {j.upper}] maps to servo ticks [{lo}, {hi}], outside "
                    f"{s.mode} mode's [{self.tick_min[k]}, {self.tick_max[k]}]: check this servo's offset/direction/"
                    f"servo_range (hardware/README.md, calibration) or use mode: extended_position",
                    f"{self.role}.servos[{self.spec_index[k]}]")

    def to_joint(self, ticks) -> np.ndarray:
        angle = (np.asarray(ticks, dtype=np.float64) - p.CENTER_TICK) * RAD_PER_TICK
        return self.scale * angle + self.bias

    def to_ticks(self, joints) -> np.ndarray:
        """Goal ticks for joint values, clipped to what each servo's mode accepts."""
        angle = (np.asarray(joints, dtype=np.float64) - self.bias) / self.scale
        ticks = np.rint(angle / RAD_PER_TICK + p.CENTER_TICK)
        return np.clip(ticks, self.tick_min, self.tick_max).astype(np.int64)

    def to_ticks_one(self, k: int, joint_values: np.ndarray) -> np.ndarray:
        angle = (joint_values - self.bias[k]) / self.scale[k]
        return np.rint(angle / RAD_PER_TICK + p.CENTER_TICK)

    def velocity_to_joint(self, raw) -> np.ndarray:
        return self.scale * np.asarray(raw, dtype=np.float64) * RAD_S_PER_VELOCITY_UNIT

    def describe(self, ids) -> str:
        """'id 3 (elbow), id 5 (wrist_roll)' for messages."""
        name = dict(zip(self.ids, self.joints))
        return ", ".join(f"id {i} ({name.get(i, '?')})" for i in ids)
