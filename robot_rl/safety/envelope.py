"""The robot-side safety envelope (DESIGN.md §7).

It runs in the robot driver's process, between whatever sends commands (policy, teleop, learner-fed
residuals) and the actuators, so its limits hold when any of those die or misbehave:
- a command with unknown/missing joints or non-finite values is rejected and the robot holds;
- targets are clipped to each joint's position limits;
- the executed setpoint moves toward the target no faster than the joint's velocity limit
  (so a far-away first command never makes the arm jump);
- no fresh command for `command_timeout_periods` control periods -> hold;
- e-stop -> hold until released and a fresh command arrives.
Every clip, rejection and hold is counted for /diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.config.profile import RobotSpec, SafetySpec


@dataclass
class SafetyCounters:
    commands_accepted: int = 0
    commands_rejected: int = 0
    position_clips: int = 0  # commands with at least one joint outside its limits
    velocity_limited: int = 0  # commands asking for a faster move than the velocity limit allows
    stale_holds: int = 0  # times the command stream went quiet and the robot held
    estops: int = 0
    last_reject_reason: str = ""
    clips_per_joint: dict[str, int] = field(default_factory=dict)


class SafetyEnvelope:
    def __init__(self, robot: RobotSpec, safety: SafetySpec):
        self.joint_names = robot.joint_names
        self.lower = np.array([j.lower for j in robot.joints])
        self.upper = np.array([j.upper for j in robot.joints])
        self.max_step_rate = np.array([j.max_velocity for j in robot.joints]) * safety.velocity_scale
        self.control_period = 1.0 / robot.control_rate_hz
        self.timeout = safety.command_timeout_periods * self.control_period
        self.counters = SafetyCounters(clips_per_joint={n: 0 for n in self.joint_names})
        self._setpoint: np.ndarray | None = None  # what the actuators are told, moves at <= max velocity
        self._target: np.ndarray | None = None  # latest accepted command, clipped to limits
        self._last_command_time = -np.inf
        self._holding = True  # no command yet: hold where we are
        self.estopped = False

    # -- inputs ---------------------------------------------------------------------------------
    def command(self, positions: np.ndarray | None, now: float, error: str = "") -> bool:
        """Offer a command (positions in profile joint order). Returns whether it was accepted.

        `error` carries a conversion problem found upstream (wrong joint names): such a command is
        rejected like a non-finite one.
        """
        if not error and positions is not None:
            positions = np.asarray(positions, dtype=np.float64)
            if positions.shape != self.lower.shape:
                error = f"expected {len(self.lower)} joint positions, got shape {positions.shape}"
            elif not np.all(np.isfinite(positions)):
                error = "non-finite joint positions"
        if error or positions is None:
            self.counters.commands_rejected += 1
            self.counters.last_reject_reason = error or "empty command"
            self._hold()
            return False
        if self.estopped:
            self.counters.commands_rejected += 1
            self.counters.last_reject_reason = "e-stop active"
            return False
        clipped = np.clip(positions, self.lower, self.upper)
        outside = clipped != positions
        if outside.any():
            self.counters.position_clips += 1
            for name in np.asarray(self.joint_names)[outside]:
                self.counters.clips_per_joint[name] += 1
        if self._setpoint is not None and np.any(np.abs(clipped - self._setpoint) > self.max_step_rate * self.control_period * 1.0001):
            self.counters.velocity_limited += 1
        self._target = clipped
        self._last_command_time = now
        self._holding = False
        self.counters.commands_accepted += 1
        return True

    def set_estop(self, active: bool) -> None:
        if active and not self.estopped:
            self.counters.estops += 1
        self.estopped = active
        self._hold()

    # -- output ---------------------------------------------------------------------------------
    def setpoint(self, measured: np.ndarray, now: float, dt: float) -> np.ndarray:
        """The position the actuators should hold now; call at the servo/physics update rate."""
        if self._setpoint is None:
            self._setpoint = np.clip(np.asarray(measured, dtype=np.float64), self.lower, self.upper)
        if not self._holding and now - self._last_command_time > self.timeout:
            self.counters.stale_holds += 1
            self._hold()
        if not self._holding and not self.estopped and self._target is not None:
            step = self.max_step_rate * dt
            self._setpoint = self._setpoint + np.clip(self._target - self._setpoint, -step, step)
        return self._setpoint.copy()

    @property
    def holding(self) -> bool:
        return self._holding or self.estopped

    def reset(self, measured: np.ndarray) -> None:
        """After a robot reset: hold the new pose, forget the old command."""
        self._setpoint = np.clip(np.asarray(measured, dtype=np.float64), self.lower, self.upper)
        self._target = None
        self._holding = True

    def _hold(self) -> None:
        self._holding = True
        self._target = None

    def diagnostics(self) -> dict[str, str]:
        c = self.counters
        out = {
            "commands_accepted": str(c.commands_accepted),
            "commands_rejected": str(c.commands_rejected),
            "last_reject_reason": c.last_reject_reason,
            "position_clips": str(c.position_clips),
            "velocity_limited": str(c.velocity_limited),
            "stale_holds": str(c.stale_holds),
            "estops": str(c.estops),
            "estop_active": str(self.estopped).lower(),
            "holding": str(self.holding).lower(),
        }
        out.update({f"clips.{name}": str(n) for name, n in c.clips_per_joint.items()})
        return out
