"""The recorder's core (no ROS): sensor samples and commands in, aligned store steps out.

Every observation is built by the as-of join of DESIGN.md §4 (`AsOfAligner`), the same function the
policy node uses at deployment. Steps stream to disk through an `EpisodeWriter` (background thread),
held back by one tick so the final step can carry the sparse reward once the label is known.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.config import Profile, to_dict
from robot_rl.data.align import AsOfAligner
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.schema import KeySpec, StoreError
from robot_rl.data.store import Store

JOINTS = "joint_state"
STATE_KIND, STATE_NAME = "state", "robot"  # the low-dim state vector (/robot/state), an array stream
STATE = f"{STATE_KIND}/{STATE_NAME}"
STATE_KEY = "obs/state"
ACTION, BASE_ACTION, RESIDUAL = "action", "base_action", "residual"
# The executed action's index in the base's chunk (-1: no base ran, a demo). The learner cuts
# rollouts into the decisions the policy node made from it: in real time, late chunks skip actions and
# new chunks start early, so chunks are not back to back from the episode start. Stores created
# before it existed lack the key; they keep recording without it (readers assume lockstep chunks).
CHUNK_PHASE = "chunk_phase"
OPTIONAL_KEYS = (CHUNK_PHASE,)
MAX_PENDING_STEPS = 3  # lockstep teleop: a step still missing a sample when 3 more are commanded is recorded as is


def camera_key(name: str) -> str:
    return f"obs/camera_{name}"


def depth_key(name: str) -> str:
    return f"obs/depth_{name}"


def tactile_key(name: str) -> str:
    return f"obs/tactile_{name}"


def store_layout(profile: Profile, record_depth: bool = False) -> tuple[dict[str, KeySpec], dict[str, Any]]:
    """The store keys and root attributes a profile's recordings use (demos and rollouts alike)."""
    n = len(profile.robot.joints)
    keys = {"obs/joint_pos": KeySpec((n,), "float32"), "obs/joint_vel": KeySpec((n,), "float32")}
    streams = [{"name": "joint_state", "shape": [n], "dtype": "float32", "rate_hz": profile.robot.state_rate_hz}]
    for cam in profile.cameras:
        keys[camera_key(cam.name)] = KeySpec((cam.height, cam.width, 3), "uint8")
        streams.append({"name": f"camera_{cam.name}", "shape": [cam.height, cam.width, 3], "dtype": "uint8",
                        "rate_hz": cam.fps})
        if record_depth and cam.depth:
            keys[depth_key(cam.name)] = KeySpec((cam.height, cam.width), "uint16")
    for tac in profile.tactile:
        keys[tactile_key(tac.name)] = KeySpec((tac.rows, tac.cols), "float32")
        streams.append({"name": f"tactile_{tac.name}", "shape": [tac.rows, tac.cols], "dtype": "float32",
                        "rate_hz": tac.rate_hz})
    if profile.state_names:
        d = len(profile.state_names)
        keys[STATE_KEY] = KeySpec((d,), "float32")
        streams.append({"name": "state", "shape": [d], "dtype": "float32", "rate_hz": profile.robot.state_rate_hz})
    for key in (ACTION, BASE_ACTION, RESIDUAL):
        keys[key] = KeySpec((n,), "float32")
    keys.update({"reward": KeySpec((), "float32"), "intervention": KeySpec((), "bool"), "stamp": KeySpec((), "float64"),
                 CHUNK_PHASE: KeySpec((), "int16")})
    attrs = {
        "control_rate_hz": profile.robot.control_rate_hz,
        "profile": to_dict(profile),
        "streams": streams,
        "action": {"joint_names": profile.robot.joint_names, "lower": [j.lower for j in profile.robot.joints],
                   "upper": [j.upper for j in profile.robot.joints]},
    }
    return keys, attrs


def stream_max_ages(profile: Profile, record_depth: bool = False) -> dict[str, float]:
    """How old each stream's newest sample may be at a tick: a few periods plus transport and
    scheduling slack (a busy 2-core machine delays a Python callback by tens of milliseconds)."""
    period = 1.0 / profile.robot.control_rate_hz
    ages = {JOINTS: max(5.0 / profile.robot.state_rate_hz, 0.05), ACTION: 2.5 * period}
    for cam in profile.cameras:
        ages[f"color/{cam.name}"] = 3.0 / cam.fps + 0.03
        if record_depth and cam.depth:
            ages[f"depth/{cam.name}"] = 3.0 / cam.fps + 0.03
    for tac in profile.tactile:
        ages[f"tactile/{tac.name}"] = max(5.0 / tac.rate_hz, 0.05)
    if profile.state_names:
        ages[STATE] = ages[JOINTS]
    return ages


def observation_values(profile: Profile, values: dict[str, Any], depth: bool = False) -> dict[str, np.ndarray]:
    """Store-keyed observation arrays from one as-of join's stream values (recorder and policy node)."""
    position, velocity = values[JOINTS]
    out = {"obs/joint_pos": np.asarray(position, np.float32), "obs/joint_vel": np.asarray(velocity, np.float32)}
    for cam in profile.cameras:
        out[camera_key(cam.name)] = values[f"color/{cam.name}"]
        if depth and cam.depth:
            out[depth_key(cam.name)] = values[f"depth/{cam.name}"]
    for tac in profile.tactile:
        out[tactile_key(tac.name)] = values[f"tactile/{tac.name}"]
    if profile.state_names:
        out[STATE_KEY] = np.asarray(values[STATE], np.float32)
    return out


def open_or_create(path, profile: Profile, record_depth: bool = False) -> Store:
    """Open `path` for writing, creating it with the profile's layout; refuse a store of another layout."""
    keys, attrs = store_layout(profile, record_depth)
    try:
        store = Store.open(path, "a")
    except StoreError:
        from pathlib import Path

        if Path(path).exists():
            raise
        return Store.create(path, keys=keys, attrs=attrs)
    missing_optional = {k for k in OPTIONAL_KEYS if k not in store.keys}
    mismatch = {k for k in set(keys) ^ set(store.keys) if k not in missing_optional} | \
        {k for k in keys if k in store.keys and store.keys[k] != keys[k]}
    if mismatch:
        store.close()
        raise StoreError(f"{path}: recorded with a different setup (keys differ: {', '.join(sorted(mismatch))}); "
                         f"use a new store path for profile {profile.name}")
    return store


@dataclass
class EpisodeHealth:
    """Per-episode health stored with the episode; an episode below the bar is flagged, not hidden."""

    control_rate_hz: float
    camera_periods: dict[str, float]
    min_rate_fraction: float = 0.9
    max_invalid_fraction: float = 0.05
    ticks: int = 0
    invalid: int = 0
    recorded_stamps: list[float] = field(default_factory=list)
    dropped_frames: dict[str, int] = field(default_factory=dict)
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    last_frame: dict[str, float] = field(default_factory=dict)

    def frame(self, camera: str, stamp: float) -> None:
        last = self.last_frame.get(camera)
        period = self.camera_periods[camera]
        if last is not None and stamp - last > 1.5 * period:
            self.dropped_frames[camera] = self.dropped_frames.get(camera, 0) + round((stamp - last) / period) - 1
        self.last_frame[camera] = stamp

    def report(self) -> dict[str, Any]:
        s = np.asarray(self.recorded_stamps)
        span = float(s[-1] - s[0]) if len(s) > 1 else 0.0
        rate = (len(s) - 1) / span if span > 0 else 0.0
        largest_gap = float(np.diff(s).max()) if len(s) > 1 else 0.0
        invalid_fraction = self.invalid / self.ticks if self.ticks else 0.0
        problems = []
        if len(s) > 1 and rate < self.min_rate_fraction * self.control_rate_hz:
            problems.append(f"rate {rate:.1f} Hz < {self.min_rate_fraction:.0%} of {self.control_rate_hz:g} Hz")
        if invalid_fraction > self.max_invalid_fraction:
            problems.append(f"{invalid_fraction:.0%} invalid ticks (> {self.max_invalid_fraction:.0%})")
        if largest_gap > 3.0 / self.control_rate_hz:
            problems.append(f"largest gap {largest_gap * 1e3:.0f} ms")
        return {"ok": not problems, "problems": problems, "achieved_rate_hz": round(rate, 3),
                "largest_gap_s": round(largest_gap, 4), "ticks": self.ticks, "invalid_ticks": self.invalid,
                "invalid_reasons": dict(self.invalid_reasons), "dropped_frames": dict(self.dropped_frames)}


class Recording:
    """Thread-safe enough for one callback thread adding samples and one tick thread recording."""

    def __init__(self, profile: Profile, writer: EpisodeWriter, *, record_depth: bool = False,
                 min_rate_fraction: float = 0.9, max_invalid_fraction: float = 0.05, frames_per_tick: bool = False):
        """`frames_per_tick`: cameras may deliver only one frame per control tick (a lockstep sim in
        rollout mode), so a frame gap counts as a drop only beyond a control period."""
        self.profile = profile
        self.writer = writer
        self.record_depth = record_depth
        self.aligner = AsOfAligner(stream_max_ages(profile, record_depth))
        self.health_bar = (min_rate_fraction, max_invalid_fraction)
        self.frames_per_tick = frames_per_tick
        self.cameras = [c.name for c in profile.cameras]
        self.health: EpisodeHealth | None = None
        self.success: bool | None = None
        self.intervening = False
        self.base_ckpt = ""
        self._held: dict[str, np.ndarray] | None = None
        self.episodes_committed = 0
        self.started_at = 0.0
        self._pending: dict[float, dict[str, np.ndarray]] = {}
        self._step_ticks: list[float] = []  # lockstep teleop: commanded steps not recorded yet
        self._last_step = -np.inf  # lockstep teleop: the newest commanded step
        self.records_phase = CHUNK_PHASE in writer.store.keys

    @property
    def recording(self) -> bool:
        return self.health is not None

    # -- inputs ---------------------------------------------------------------------------------
    def add_joint_state(self, stamp: float, position: np.ndarray, velocity: np.ndarray) -> None:
        self.aligner.add(JOINTS, stamp, (position, velocity))
        self._record_steps()

    def add_image(self, kind: str, camera: str, stamp: float, image: np.ndarray) -> None:
        if kind == "depth" and not self.record_depth:
            return
        if self.aligner.add(f"{kind}/{camera}", stamp, image) and kind == "color" and self.health is not None:
            self.health.frame(camera, stamp)
        self._record_steps()

    def add_tactile(self, sensor: str, stamp: float, image: np.ndarray) -> None:
        self.aligner.add(f"tactile/{sensor}", stamp, image)
        self._record_steps()

    def add_command(self, stamp: float, positions: np.ndarray) -> None:
        self.aligner.add(ACTION, stamp, positions)

    def add_step_command(self, stamp: float, positions: np.ndarray) -> None:
        """Lockstep teleop: the command that acts on the sim step stamped `stamp`. The step is recorded
        once every stream has delivered it (a camera image can arrive after the small command), or,
        should one of its samples be lost, once the steps after it pile up."""
        if stamp <= self._last_step:
            return  # the same step again (the teleop re-sends on a stall)
        self._last_step = stamp
        self.add_command(stamp, positions)
        self._step_ticks.append(stamp)
        self._record_steps()

    def _record_steps(self) -> None:
        if not self._step_ticks:
            return
        arrived = [self.aligner.latest_stamp(s) for s in self.aligner.streams if s != ACTION]
        newest = -np.inf if None in arrived else min(arrived)  # every stream has delivered up to here
        while self._step_ticks and (self._step_ticks[0] <= newest + 1e-6 or len(self._step_ticks) > MAX_PENDING_STEPS):
            self.tick(self._step_ticks.pop(0))

    def add_policy_output(self, kind: str, stamp: float, positions: np.ndarray) -> dict[str, np.ndarray] | None:
        """Rollout mode: the policy publishes command, base action, residual and chunk phase on one stamp,
        on four topics that may arrive in any order. Returns all four once the set for `stamp` is complete."""
        if kind == ACTION:
            self.add_command(stamp, positions)
        entry = self._pending.setdefault(stamp, {})
        entry[kind] = np.asarray(positions, dtype=np.float32)
        if len(entry) == 4:
            del self._pending[stamp]
            for old in [s for s in self._pending if s < stamp]:  # a lost message never completes
                del self._pending[old]
            return entry
        return None

    def stale_streams(self, now: float, commands: bool = False) -> dict[str, str]:
        """The start gate: streams not fresh at `now` ({} = ready). `commands`: the command stream too
        (teleop: every device publishes its target at the control rate, still or not, so a stale
        command stream means the recorder does not hear the teleop node yet - a discovery still under
        way on a busy machine - and every tick of the episode would be invalid). Rollouts tick on the
        policy's own messages and do not need it."""
        return {s: p for s, p in self.aligner.observe(now).problems.items() if commands or s != ACTION}

    # -- episode lifecycle ----------------------------------------------------------------------
    def start(self, source: str = "demo", base_ckpt: str = "") -> None:
        self.writer.begin(source=source)
        self.started_at = time.time()
        self.base_ckpt = base_ckpt
        self.success = None
        self._held = None
        self.intervention_steps = 0
        floor = 1.0 / self.profile.robot.control_rate_hz if self.frames_per_tick else 0.0
        self.health = EpisodeHealth(self.profile.robot.control_rate_hz,
                                    {c.name: max(1.0 / c.fps, floor) for c in self.profile.cameras}, *self.health_bar)

    def tick(self, t: float, policy: dict[str, np.ndarray] | None = None) -> bool:
        """Record the observation at time t with the command in effect; False if it was invalid.

        `policy` (rollout mode): the base action and residual behind the command at t."""
        if self.health is None:
            return False
        self.health.ticks += 1
        obs = self.aligner.observe(t)
        if not obs.valid:
            self.health.invalid += 1
            for stream in obs.problems:
                self.health.invalid_reasons[stream] = self.health.invalid_reasons.get(stream, 0) + 1
            return False
        action = np.asarray(obs.values[ACTION], dtype=np.float32)
        # A demo has no base policy: its base action is the executed one and its residual zero.
        base = policy[BASE_ACTION] if policy else action
        residual = policy[RESIDUAL] if policy else np.zeros_like(action)
        step: dict[str, Any] = {**observation_values(self.profile, obs.values, self.record_depth), ACTION: action,
                                BASE_ACTION: base, RESIDUAL: residual, "reward": 0.0,
                                "intervention": self.intervening, "stamp": t}
        if self.records_phase:
            step[CHUNK_PHASE] = np.int16(np.asarray(policy[CHUNK_PHASE]).reshape(-1)[0] if policy else -1)
        self.intervention_steps += int(self.intervening)
        if self._held is not None:
            self.writer.add_step(self._held)
        self._held = step
        self.health.recorded_stamps.append(t)
        return True

    def label(self, success: bool) -> None:
        self.success = success

    def stop(self) -> tuple[int, dict]:
        """Commit the episode (sparse reward 1 on the last step if labelled a success)."""
        if self.health is None:
            raise StoreError("not recording")
        health = self.health.report()
        health["labelled"] = self.success is not None
        health["intervention_steps"] = self.intervention_steps
        try:
            if self._held is None:
                raise StoreError("the episode has no valid step (every tick was invalid); nothing to commit: "
                                 + "; ".join(f"{s}: {n} ticks" for s, n in health["invalid_reasons"].items()))
            self._held["reward"] = 1.0 if self.success else 0.0
            self.writer.add_step(self._held)
            # HIL-SERL: a rollout a human took over is an intervention episode (the learner also
            # puts it in the demo buffer); its per-step `intervention` flags say which steps.
            source = "intervention" if self.intervention_steps and self.writer.source == "rollout" else None
            index = self.writer.commit(bool(self.success), health, base_ckpt=self.base_ckpt, source=source)
        except BaseException:
            self.writer.discard()
            raise
        finally:
            self.health, self._held = None, None
        self.episodes_committed += 1
        return index, health

    def discard(self) -> None:
        self.writer.discard()
        self.health, self._held = None, None

