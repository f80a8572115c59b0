"""The simulated robot as a driver: physics behind the safety envelope, sensors on their own clocks.

The sim node only wires this to ROS. Two clocks:
- realtime: the caller advances the sim to keep pace with the wall clock (like hardware); every
  stream is sampled at its own rate (joint states, each camera, each tactile sensor).
- lockstep: each command advances exactly one control period, as fast as the CPU allows, and every
  stream is sampled once at the end of the period, so a consumer sees one consistent observation
  per step (for training and fast evaluation).
Stamps are capture times in seconds: `stamp_origin + sim_time / realtime_factor`.
With `camera_delay_s` > 0 each camera image shows the scene that long before its stamp, like a camera
whose driver stamps frames late: the known latency the time-offset calibration must recover.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from robot_rl.config.nodes import SimRobotParams
from robot_rl.config.profile import Profile
from robot_rl.config.typed import ConfigError
from robot_rl.safety import SafetyEnvelope
from robot_rl.sim.robot import SimRobot, parse_drift


@dataclass
class Sample:
    kind: str  # joint_state | color | depth | tactile | task_state
    name: str  # camera / sensor name ("" for robot-wide streams)
    stamp: float
    value: Any


class DriverBase:
    """What every sim driver shares (the MuJoCo scene's and the gymnasium adapter's): stamps from
    the robot's sim time, and commands and e-stop through the safety envelope under one lock.
    Subclasses set robot, envelope, lock, stamp_origin and realtime_factor."""

    # -- time -----------------------------------------------------------------------------------
    @property
    def sim_time(self) -> float:
        return self.robot.time

    def stamp(self, sim_time: float | None = None) -> float:
        t = self.robot.time if sim_time is None else sim_time
        return self.stamp_origin + t / self.realtime_factor

    def rebase(self, wall_now: float) -> None:
        """Realtime clock fell behind: re-anchor so stamps keep tracking the wall clock."""
        self.stamp_origin = wall_now - self.robot.time / self.realtime_factor

    # -- inputs (thread-safe) -------------------------------------------------------------------
    def command(self, positions: np.ndarray | None, error: str = "") -> bool:
        with self.lock:
            return self.envelope.command(positions, self.stamp(), error)

    def set_estop(self, active: bool) -> None:
        with self.lock:
            self.envelope.set_estop(active)

    def _episode_started(self) -> dict:
        """After a reset (lock held): count the episode, keep lockstep stamps strictly increasing
        (sim time does not move on reset), and return the new task state."""
        self.episode += 1
        if self.clock == "lockstep":
            self.stamp_origin += self.robot.control_dt
        return {**self.robot.task_state(), "episode": self.episode, "stamp": self.stamp()}


class SimDriver(DriverBase):
    def __init__(self, profile: Profile, params: SimRobotParams, stamp_origin: float = 0.0):
        assert profile.sim is not None
        self.profile = profile
        self.clock = profile.sim.clock if params.clock == "profile" else params.clock
        self.render = params.render
        self.realtime_factor = params.realtime_factor
        seed = profile.sim.seed if params.seed < 0 else params.seed
        try:
            drift = parse_drift(params.drift, list(profile.robot.joint_names))
        except ValueError as e:
            raise ConfigError(str(e), "drift") from None
        self.robot = SimRobot(profile, seed=seed, render=params.render, drift=drift)
        self.robot.reset(seed)
        self.envelope = SafetyEnvelope(profile.robot, profile.safety)
        self.envelope.reset(self.robot.joint_state()[0])
        self.stamp_origin = stamp_origin
        self.lock = threading.Lock()  # guards robot + envelope between the sim thread and callbacks
        self.steps_per_control = max(1, round(self.robot.control_dt / self.robot.physics_dt))
        self._periods = {("joint_state", ""): 1.0 / profile.robot.state_rate_hz,
                         ("task_state", ""): self.robot.control_dt}
        for tac in profile.tactile:
            self._periods[("tactile", tac.name)] = 1.0 / tac.rate_hz
        if self.render:
            for cam in profile.cameras:
                self._periods[("camera", cam.name)] = 1.0 / cam.fps
        self._depth_cameras = {cam.name for cam in profile.cameras if cam.depth}
        self._next_due = {key: self.robot.time for key in self._periods}
        self.episode = 0
        self.camera_delay = params.camera_delay_s
        self._history: deque = deque()  # (sim time, qpos, mocap pos, mocap quat), only with a camera delay
        self._delayed = mujoco.MjData(self.robot.model) if self.camera_delay > 0 else None

    def reset(self, seed: int | None = None) -> dict:
        with self.lock:
            self.robot.reset(seed)
            self.envelope.reset(self.robot.joint_state()[0])
            self._history.clear()  # a delayed camera never shows the previous episode
            return self._episode_started()

    # -- stepping -------------------------------------------------------------------------------
    def advance(self, n_physics_steps: int) -> list[Sample]:
        """Step physics through the envelope; return the samples that came due (realtime clock)."""
        samples: list[Sample] = []
        with self.lock:
            for _ in range(n_physics_steps):
                self._physics_step()
                for key, due in self._next_due.items():
                    if self.robot.time + 1e-9 >= due:
                        samples.extend(self._capture(*key))
                        period = self._periods[key]
                        nxt = due + period
                        self._next_due[key] = nxt if nxt > self.robot.time else self.robot.time + period
        return samples

    def step_control(self) -> list[Sample]:
        """Lockstep: one control period, then one sample of every stream at its end."""
        with self.lock:
            for _ in range(self.steps_per_control):
                self._physics_step()
            samples: list[Sample] = []
            for key in self._periods:
                samples.extend(self._capture(*key))
        return samples

    def observe_all(self) -> list[Sample]:
        """Every stream now (e.g. right after a reset, so consumers see the new state)."""
        with self.lock:
            return [s for key in self._periods for s in self._capture(*key)]

    def _physics_step(self) -> None:
        q = self.robot.joint_state()[0]
        self.robot.set_target(self.envelope.setpoint(q, self.stamp(), self.robot.physics_dt))
        self.robot.step_physics(1)
        if self._delayed is not None:
            d = self.robot.data
            self._history.append((self.robot.time, d.qpos.copy(), d.mocap_pos.copy(), d.mocap_quat.copy()))
            while len(self._history) > 1 and self._history[1][0] <= self.robot.time - self.camera_delay + 1e-9:
                self._history.popleft()  # keep the newest state at or before (now - delay)

    def _render(self, name: str):
        """The camera image now, or with a delay the scene as it was `camera_delay` ago."""
        if self._delayed is None or not self._history:
            return self.robot.render(name)
        _, qpos, mocap_pos, mocap_quat = self._history[0]
        view = self._delayed
        view.qpos[:], view.mocap_pos[:], view.mocap_quat[:] = qpos, mocap_pos, mocap_quat
        mujoco.mj_kinematics(self.robot.model, view)
        mujoco.mj_camlight(self.robot.model, view)
        return self.robot._need_renderer(name).render(view, name)  # same GL context, another state

    def _capture(self, kind: str, name: str) -> list[Sample]:
        stamp = self.stamp()
        if kind == "joint_state":
            return [Sample(kind, name, stamp, self.robot.joint_state())]
        if kind == "task_state":
            state = self.robot.task_state()
            state["episode"] = self.episode
            return [Sample(kind, name, stamp, state)]
        if kind == "tactile":
            return [Sample(kind, name, stamp, self.robot.tactile(name))]
        rgb, depth = self._render(name)
        color = Sample("color", name, stamp, rgb)
        return [color, Sample("depth", name, stamp, depth)] if name in self._depth_cameras else [color]

    def diagnostics(self) -> dict[str, str]:
        with self.lock:
            values = self.envelope.diagnostics()
        values.update({"clock": self.clock, "sim_time": f"{self.robot.time:.3f}", "episode": str(self.episode)})
        return values

    def close(self) -> None:
        self.robot.close()
