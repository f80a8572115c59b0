"""Leader-arm teleop: a torque-off copy of the arm that a human moves; the follower copies its joints.

The leader is a Dynamixel chain of its own (profile `leader:` bus). Its ServoSpecs map each servo
into the FOLLOWER's joint space (same joint names, own ids/directions/offsets/gripper range), so
`read` returns follower joint targets directly. Torque is written off at start and never enabled.
Joints the leader lacks keep the robot's current position. `intervening` is true while the leader
is being moved (and for `HOLD_S` after), so a policy can hand over to the human in HIL fine-tuning.
"""
from __future__ import annotations

import time

import numpy as np

from robot_rl.config.typed import ConfigError
from robot_rl.drivers.dynamixel.bus import BusError, DynamixelBus
from robot_rl.drivers.teleop.base import DeviceError, TeleopInput

MOTION_RAD = 0.02  # leader motion (any joint, between reads) that counts as the human driving
HOLD_S = 1.0


class LeaderArmDevice:
    name = "leader_arm"

    def __init__(self, profile, params=None):
        if profile.leader is None:
            raise DeviceError(f"teleop device leader_arm needs a 'leader:' bus section (port, baud, servos) in the "
                              f"profile {profile.source or profile.name}")
        try:
            self.bus = DynamixelBus(profile.leader, profile.robot, "leader")
        except ConfigError as e:
            raise DeviceError(f"leader arm: {e}") from None
        self.index = self.bus.map.joint_index
        self.lower = np.array([j.lower for j in profile.robot.joints])
        self.upper = np.array([j.upper for j in profile.robot.joints])
        self._previous: np.ndarray | None = None
        self._last_motion = -np.inf

    def start(self) -> None:
        try:
            self.bus.open()
            self.bus.set_torque(False)  # a limp leader: the human moves it
        except BusError as e:
            self.bus.close()
            raise DeviceError(f"leader arm: {e}") from None

    def read_joints(self) -> np.ndarray:
        """The leader's joints (follower joint space) for the servos it has; one retry on a lost reply."""
        try:
            return self.bus.read_positions()
        except BusError:
            pass
        try:
            return self.bus.read_positions()
        except BusError as e:
            raise DeviceError(f"leader arm: {e}") from None

    def read(self, joint_pos: np.ndarray, task_state: dict | None = None) -> TeleopInput:
        leader = self.read_joints()
        target = np.asarray(joint_pos, dtype=np.float64).copy()
        target[self.index] = leader
        now = time.monotonic()
        if self._previous is not None and np.any(np.abs(leader - self._previous) > MOTION_RAD):
            self._last_motion = now
        self._previous = leader
        return TeleopInput(target=np.clip(target, self.lower, self.upper),
                           intervening=now - self._last_motion <= HOLD_S)

    def close(self) -> None:
        self.bus.close()
