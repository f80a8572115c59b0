"""The teleop device interface: keyboard, SpaceMouse, leader arm and the sim's scripted expert all
produce the same thing once per control tick, so the teleop node does not care which it drives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Episode-control events a device may raise (keyboard keys, buttons).
START, STOP, DISCARD, SUCCESS, FAILURE = "start", "stop", "discard", "success", "failure"


@dataclass
class TeleopInput:
    """What a device says at one control tick."""

    target: np.ndarray | None = None  # joint position targets in profile joint order; None = no motion input
    intervening: bool = False  # the human is actively driving (HIL-RL: overrides the policy)
    events: list[str] = field(default_factory=list)  # START / STOP / DISCARD / SUCCESS / FAILURE


class TeleopDevice(Protocol):
    """A source of joint targets and episode events, polled at the control rate."""

    name: str

    def start(self) -> None:
        """Open the device (ports, threads). Raise DeviceError with what to check on failure."""

    def read(self, joint_pos: np.ndarray, task_state: dict | None) -> TeleopInput:
        """Called once per control tick with the robot's latest joint positions (and, in sim, the
        privileged task state); returns the device's input for this tick."""

    def close(self) -> None:
        """Release the device; safe to call twice."""


class DeviceError(RuntimeError):
    """A device cannot be opened or stopped answering; the message names it and what to check."""
