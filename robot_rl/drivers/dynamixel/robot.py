"""The real follower arm behind the safety envelope: the robot node's core, without ROS.

Every cycle (profile state_rate_hz, >= 100 Hz): one sync read of position/velocity/current ->
a joint sample; the envelope's setpoint (rate-limited, clipped, staleness-held) -> one sync write of
goals. The servos are commanded ONLY with envelope setpoints, so:
- connecting enables torque in place (goal := present) and the envelope starts holding there, so a
  far first command is approached at the velocity limit instead of a jump;
- a servo that stops answering -> the others are told to hold where they are, commands are
  rejected (counted, reason names the id) until it answers again, then torque is re-armed in place;
- reset = a slow move home, fed through the envelope like any command.
A lost port raises PortLost to the caller (the node reconnects with back-off).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot_rl.config.profile import Profile
from robot_rl.config.typed import ConfigError
from robot_rl.drivers.dynamixel.bus import DynamixelBus, PortLost, ServosNotAnswering
from robot_rl.safety import SafetyEnvelope

log = logging.getLogger(__name__)
CATCH_UP_S = 0.5  # a loop less late than this catches up (keeps the state rate); later ones skip ahead
LOSS_READS = 3  # consecutive failed reads before a servo counts as lost (one lost status packet is noise)
PROBE_PERIOD = 0.2  # s between pings of a lost servo (each silent ping busy-waits the SDK's ~35 ms timeout)


@dataclass
class JointSample:
    stamp: float  # capture time: when the sync read went out
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class _Homing:
    def __init__(self, home: np.ndarray, speed: np.ndarray, deadline: float):
        self.home, self.speed, self.deadline = home, speed, deadline
        self.path: np.ndarray | None = None
        self.done = threading.Event()
        self.ok, self.message = False, ""

    def finish(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self.done.set()


class FollowerArm:
    def __init__(self, profile: Profile, bus: DynamixelBus | None = None, home_speed_scale: float = 0.25):
        if profile.follower is None:
            raise ConfigError("robot.driver is dynamixel, so a 'follower:' bus section is required", "follower",
                              profile.source)
        names = profile.robot.joint_names
        uncovered = [n for n in names if n not in {s.joint for s in profile.follower.servos}]
        if uncovered:
            raise ConfigError(f"no follower servo drives joint(s) {', '.join(uncovered)}", "follower.servos",
                              profile.source)
        self.profile = profile
        self.joint_names = names
        self.bus = bus or DynamixelBus(profile.follower, profile.robot, "follower")
        self.envelope = SafetyEnvelope(profile.robot, profile.safety)
        self.lock = threading.Lock()  # envelope + homing, shared by the loop and command callbacks
        self.period = 1.0 / profile.robot.state_rate_hz
        self.home = np.array([j.home for j in profile.robot.joints])
        self.home_speed = np.array([j.max_velocity for j in profile.robot.joints]) * home_speed_scale
        self.tolerance = np.array([max(0.01, 0.01 * (j.upper - j.lower)) for j in profile.robot.joints])
        self.connected = False
        self.missing: list[int] = []
        self.servo_losses = self.recoveries = self.cycles = self.overruns = self.ignored_while_homing = 0
        self.failed_reads = 0
        self.last_sample: JointSample | None = None
        self.state_rate_hz = 0.0  # joint samples per second over the last second of the loop
        self._setpoint: np.ndarray | None = None
        self._last_stamp: float | None = None
        self._next_probe = 0.0
        self._homing: _Homing | None = None

    # -- connection -----------------------------------------------------------------------------
    def connect(self) -> JointSample:
        """Open the chain, enable torque where the arm stands, hold there. BusError says what to check."""
        self.bus.open()
        self.bus.torque_on_in_place()
        sample = self._read()
        with self.lock:
            self.envelope.reset(sample.position)
            self._setpoint = sample.position.copy()
        self.missing, self.connected, self._last_stamp, self.failed_reads = [], True, sample.stamp, 0
        self.last_sample = sample
        return sample

    def disconnect(self, torque_off: bool = True) -> None:
        if self.bus.opened and torque_off:
            try:
                self.bus.set_torque(False)
            except Exception as e:  # noqa: BLE001 - best effort on the way out (the port may be gone)
                log.warning("could not disable torque: %s", e)
        self.bus.close()
        self.connected = False
        with self.lock:
            if self._homing is not None:
                self._homing.finish(False, "robot disconnected")
                self._homing = None

    # -- inputs (thread-safe) -------------------------------------------------------------------
    def command(self, positions: np.ndarray | None, error: str = "", now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.lock:
            if not error and self.missing:
                error = f"servo {self.bus.map.describe(self.missing)} not answering; holding"
            elif not error and not self.connected:
                error = "robot not connected"
            if self._homing is not None and not error:
                self.ignored_while_homing += 1
                return False
            return self.envelope.command(positions, now, error)

    def set_estop(self, active: bool) -> None:
        with self.lock:
            self.envelope.set_estop(active)

    def start_homing(self) -> _Homing:
        """Begin a slow move to the profile's home pose; wait on the returned `.done`."""
        with self.lock:
            start = self._setpoint if self._setpoint is not None else self.home
            duration = float(np.max(np.abs(self.home - start) / self.home_speed))
            homing = _Homing(self.home.copy(), self.home_speed, time.time() + 2.0 * duration + 3.0)
            if not self.connected or self.missing:
                homing.finish(False, "robot not connected" if not self.connected else
                              f"servo {self.bus.map.describe(self.missing)} not answering")
            elif self.envelope.estopped:
                homing.finish(False, "e-stop active")
            else:
                if self._homing is not None:
                    self._homing.finish(False, "superseded by a new reset")
                self._homing = homing
            return homing

    # -- the cycle ------------------------------------------------------------------------------
    def _read(self) -> JointSample:
        stamp = time.time()
        pos, vel, eff = self.bus.read_state()
        return JointSample(stamp, pos, vel, eff)

    def step(self) -> JointSample | None:
        """One servo cycle; a JointSample when the whole chain answered. Raises PortLost."""
        if self.missing:
            return self._probe_missing()
        try:
            sample = self._read()
        except ServosNotAnswering as e:
            self.failed_reads += 1
            if self.failed_reads >= LOSS_READS:
                self._servo_lost(e)
            return None  # no new goals this cycle: the servos keep the last setpoint
        self.failed_reads = 0
        dt = min(max(sample.stamp - (self._last_stamp or sample.stamp), 0.0), 5 * self.period)
        self._last_stamp = sample.stamp
        with self.lock:
            self._homing_step(sample, dt)
            setpoint = self.envelope.setpoint(sample.position, sample.stamp, dt)
            self._setpoint = setpoint
        self.bus.write_goals(setpoint)
        self.last_sample = sample
        self.cycles += 1
        return sample

    def _servo_lost(self, e: ServosNotAnswering) -> None:
        hold = self.last_sample.position if self.last_sample is not None else None
        with self.lock:
            self.missing = e.ids
            self.servo_losses += 1
            if hold is not None:
                self.envelope.reset(hold)
                self._setpoint = hold.copy()
            if self._homing is not None:
                self._homing.finish(False, str(e))
                self._homing = None
        log.error("%s; holding the other servos where they are", e)
        if hold is not None:
            self.bus.write_goals(hold)  # the silent servo ignores it; the others stop where they stand
        self._next_probe = time.monotonic() + PROBE_PERIOD

    def _probe_missing(self) -> JointSample | None:
        if time.monotonic() < self._next_probe:
            return None
        self._next_probe = time.monotonic() + PROBE_PERIOD
        if self.bus.ping(self.missing) != self.missing:
            return None
        try:  # all back: re-arm in place (a servo that lost power comes back with torque off)
            self.bus.torque_on_in_place()
            sample = self._read()
        except ServosNotAnswering as e:
            self.missing = e.ids
            return None
        self.failed_reads = 0
        log.warning("servo %s answers again; holding until a fresh command", self.bus.map.describe(self.missing))
        with self.lock:
            self.envelope.reset(sample.position)
            self._setpoint = sample.position.copy()
            self.missing = []
        self.recoveries += 1
        self._last_stamp = sample.stamp
        self.last_sample = sample
        return sample

    def _homing_step(self, sample: JointSample, dt: float) -> None:
        h = self._homing
        if h is None:
            return
        if self.envelope.estopped:
            h.finish(False, "e-stop pressed during reset")
        elif np.all(np.abs(sample.position - h.home) <= self.tolerance) and h.path is not None \
                and np.array_equal(h.path, h.home):
            self.envelope.reset(h.home)
            h.finish(True, "")
        elif sample.stamp > h.deadline:
            far = int(np.argmax(np.abs(sample.position - h.home) / self.tolerance))
            h.finish(False, f"did not reach home in time: {self.joint_names[far]} at "
                            f"{sample.position[far]:.3f}, home {h.home[far]:.3f}")
        else:
            if h.path is None:
                h.path = self._setpoint.copy() if self._setpoint is not None else sample.position.copy()
            h.path = h.path + np.clip(h.home - h.path, -h.speed * dt, h.speed * dt)
            self.envelope.command(h.path, sample.stamp)
            return
        self._homing = None

    def run(self, should_stop: Callable[[], bool], publish: Callable[[JointSample], None],
            wait: Callable[[float], object] = time.sleep) -> None:
        """Cycle at the state rate until `should_stop()`; PortLost propagates."""
        next_tick = window_start = time.monotonic()
        published = 0
        while not should_stop():
            sample = self.step()
            if sample is not None:
                publish(sample)
                published += 1
            if next_tick - window_start >= 1.0:
                self.state_rate_hz, published, window_start = published / (next_tick - window_start), 0, next_tick
            next_tick += self.period
            delay = next_tick - time.monotonic()
            if delay < -CATCH_UP_S:  # far behind (a lost servo, a stalled machine): re-anchor
                self.overruns += 1
                next_tick = time.monotonic()
            elif delay > 0:
                wait(delay)

    def diagnostics(self) -> dict[str, str]:
        with self.lock:
            values = self.envelope.diagnostics()
        values.update({
            "port": self.bus.spec.port, "baud": str(self.bus.spec.baud), "connected": str(self.connected).lower(),
            "missing_ids": ",".join(map(str, self.missing)),
            "missing_joints": ",".join(j for i, j in zip(self.bus.ids, self.bus.map.joints) if i in self.missing),
            "servo_losses": str(self.servo_losses), "recoveries": str(self.recoveries),
            "cycles": str(self.cycles), "state_rate_hz": f"{self.state_rate_hz:.1f}", "overruns": str(self.overruns),
            "read_failures": str(self.bus.read_failures),
            "homing": str(self._homing is not None).lower(), "ignored_while_homing": str(self.ignored_while_homing),
        })
        if self.missing:
            values["holding"] = "true"
        return values


__all__ = ["FollowerArm", "JointSample", "PortLost"]
