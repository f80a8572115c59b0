"""Teleop devices by name (imported lazily: each pulls in its own hardware library)."""
from __future__ import annotations

import importlib

from robot_rl.drivers.teleop.base import DeviceError, TeleopDevice

DEVICES = {
    "expert": "robot_rl.drivers.teleop.expert:ExpertDevice",
    "keyboard": "robot_rl.drivers.teleop.keyboard:KeyboardDevice",
    "spacemouse": "robot_rl.drivers.teleop.spacemouse:SpaceMouseDevice",
    "leader_arm": "robot_rl.drivers.teleop.leader_arm:LeaderArmDevice",
}


def make_device(name: str, profile, params) -> TeleopDevice:
    if name not in DEVICES:
        raise DeviceError(f"unknown teleop device {name!r}; known: {', '.join(DEVICES)}")
    module, cls = DEVICES[name].split(":")
    return getattr(importlib.import_module(module), cls)(profile, params)
