"""3Dconnexion SpaceMouse teleop (`pyspacemouse`): the six axes jog the first six non-gripper joints,
left button toggles recording, right button opens/closes the gripper.

Joint-space jogging works for any arm in a profile; Cartesian jogging needs the arm's kinematics,
which profiles do not describe yet.
"""
from __future__ import annotations

import numpy as np

from robot_rl.drivers.teleop.base import START, STOP, DeviceError, TeleopInput

DEADBAND = 0.08


class SpaceMouseDevice:
    name = "spacemouse"

    def __init__(self, profile, params):
        self.lower = np.array([j.lower for j in profile.robot.joints])
        self.upper = np.array([j.upper for j in profile.robot.joints])
        names = profile.robot.joint_names
        self.gripper = names.index(profile.robot.gripper_joint) if profile.robot.gripper_joint else None
        self.arm = [i for i in range(len(names)) if i != self.gripper][:6]
        self.jog_step = params.jog_step
        self.target: np.ndarray | None = None
        self.recording = False
        self.buttons = (0, 0)
        self.gripper_open = True
        self._sm = None

    def start(self) -> None:
        try:
            import pyspacemouse
        except ImportError:
            raise DeviceError("SpaceMouse support needs `pip install pyspacemouse` (and the hidapi system library)") from None
        if not pyspacemouse.open():
            raise DeviceError("no SpaceMouse found: check the USB connection and hidraw permissions "
                              "(hardware/udev rules), then restart the teleop node")
        self._sm = pyspacemouse

    def read(self, joint_pos: np.ndarray, task_state: dict | None) -> TeleopInput:
        state = self._sm.read()
        axes = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=float)
        axes[np.abs(axes) < DEADBAND] = 0.0
        buttons = tuple(state.buttons[:2]) if len(state.buttons) >= 2 else (0, 0)
        return self.apply(axes, buttons, joint_pos)

    def apply(self, axes: np.ndarray, buttons: tuple[int, int], joint_pos: np.ndarray) -> TeleopInput:
        """Pure mapping (tested without a device)."""
        if self.target is None:
            self.target = np.asarray(joint_pos, dtype=float).copy()
        events = []
        if buttons[0] and not self.buttons[0]:
            self.recording = not self.recording
            events.append(START if self.recording else STOP)
        if buttons[1] and not self.buttons[1] and self.gripper is not None:
            self.gripper_open = not self.gripper_open
            self.target[self.gripper] = self.upper[self.gripper] if self.gripper_open else self.lower[self.gripper]
        self.buttons = buttons
        for axis, joint in zip(axes, self.arm):
            self.target[joint] += self.jog_step * axis
        self.target = np.clip(self.target, self.lower, self.upper)
        return TeleopInput(target=self.target.copy(), intervening=bool(np.any(axes) or buttons[1]), events=events)

    def close(self) -> None:
        if self._sm is not None:
            self._sm.close()
            self._sm = None
