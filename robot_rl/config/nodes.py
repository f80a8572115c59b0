"""Typed parameters of every node executable, so a profile's `nodes:` section is checked at load.

Kept free of rclpy: the profile loader, the graph runner and the launch files all read it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from robot_rl.config.typed import ConfigError, check


@dataclass
class SimRobotParams:
    """The MuJoCo robot behind the same ROS interface as the real one."""

    clock: Literal["profile", "realtime", "lockstep"] = "profile"  # "profile" = use sim.clock
    render: bool = True  # publish camera images (off for state-only runs)
    seed: int = -1  # -1 = use sim.seed
    realtime_factor: float = 1.0  # realtime clock only: sim seconds per wall second

    def validate(self) -> None:
        check(self.realtime_factor > 0, f"must be positive, got {self.realtime_factor}", "realtime_factor")


# executable name -> "module:Class" of its params (imported lazily so nothing heavy loads here)
NODE_PARAMS: dict[str, str] = {
    "sim_robot_node": "robot_rl.config.nodes:SimRobotParams",
}


def node_params_class(executable: str) -> type:
    if executable not in NODE_PARAMS:
        raise ConfigError(f"unknown executable {executable!r}; known: {', '.join(sorted(NODE_PARAMS))}", "executable")
    module, cls = NODE_PARAMS[executable].split(":")
    return getattr(importlib.import_module(module), cls)
