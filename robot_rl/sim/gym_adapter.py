"""A gymnasium environment as the sim robot (robot.driver: gymnasium), without ROS.

`GymDriver` offers the sim node exactly what `SimDriver` does (commands through the safety envelope,
realtime/lockstep clocks, samples to publish, reset, e-stop, diagnostics), so the node, the recorder,
the policies and the learner see a robot like any other:
- each profile joint is one action dimension; `/robot/command` positions are the action, and the
  joint limits must equal the action Box bounds (checked here, at node start);
- `/robot/joint_states` reports the action being applied (position) and its rate of change;
- the env's observation (flattened; Box, or Dict/Tuple of Boxes) goes out on `/robot/state` and is
  recorded as `obs/state`; a rendered frame (render_mode rgb_array) is the profile's one camera;
- `/sim/task_state` carries the raw observation (for the scripted expert), success, done, return.
One env step per control period: in lockstep one per accepted command, in realtime one per period
of the wall clock. When the env terminates or truncates it freezes (the last observation is
re-published, stamps move on) until the next reset, so consumers end the episode in their own time.
Success latches per episode: info[success_key] is truthy (or >= success_threshold), or, when the
env's info has no such key, terminated without truncation.
"""
from __future__ import annotations

import importlib
import math
import threading
from typing import Any, Callable

import numpy as np

from robot_rl.config.nodes import SimRobotParams
from robot_rl.config.profile import Profile
from robot_rl.config.typed import ConfigError
from robot_rl.safety import SafetyEnvelope
from robot_rl.sim.driver import DriverBase, Sample

RENDER_FOVY = math.radians(45.0)  # nominal camera model for camera_info: a gym render has no intrinsics


def _jsonable(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _jsonable(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return [_jsonable(v) for v in obs]
    return np.asarray(obs, dtype=np.float64).tolist()


def _arrays(obs: Any) -> Any:
    """Inverse of _jsonable for experts: lists back to float arrays (dicts stay dicts)."""
    if isinstance(obs, dict):
        return {k: _arrays(v) for k, v in obs.items()}
    return np.asarray(obs, dtype=np.float64)


def _all_boxes(space) -> bool:
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return all(_all_boxes(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return all(_all_boxes(s) for s in space.spaces)
    return isinstance(space, spaces.Box)


def make_env(profile: Profile, render: bool = False):
    """gymnasium.make from the profile's gym section; ConfigError naming the field otherwise."""
    import gymnasium as gym

    spec, source = profile.gym, profile.source
    kwargs = dict(spec.kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
    if spec.max_episode_steps:
        kwargs["max_episode_steps"] = spec.max_episode_steps
    try:
        env = gym.make(spec.env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"{spec.env_id} needs a package that is not installed: {e}", "gym.env_id", source) from None
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        known = sorted(k for k in gym.registry if "/" not in k)
        raise ConfigError(f"cannot make gymnasium environment {spec.env_id!r}: {e} (registered here, e.g.: "
                          f"{', '.join(known[:12])}, ...)", "gym.env_id", source) from None
    except TypeError as e:
        raise ConfigError(f"{spec.env_id} does not take these arguments: {e}", "gym.kwargs", source) from None
    try:
        check_env(profile, env)
    except ConfigError:
        env.close()
        raise
    return env


def check_env(profile: Profile, env) -> None:
    """The env fits the profile: Box spaces, joints = action bounds, observation size."""
    from gymnasium import spaces

    spec, source, joints = profile.gym, profile.source, profile.robot.joints
    act = env.action_space
    if not isinstance(act, spaces.Box) or len(act.shape) != 1:
        raise ConfigError(f"{spec.env_id} has action space {act}; only a 1-D Box can be driven as robot joints",
                          "gym.env_id", source)
    if len(joints) != act.shape[0]:
        raise ConfigError(f"{len(joints)} joints, but {spec.env_id} has {act.shape[0]} action dimensions "
                          f"(one joint per dimension, limits = {act.low.tolist()} .. {act.high.tolist()})",
                          "robot.joints", source)
    for i, j in enumerate(joints):
        for bound, env_value in (("lower", float(act.low[i])), ("upper", float(act.high[i]))):
            mine = getattr(j, bound)
            if not math.isclose(mine, env_value, rel_tol=1e-6, abs_tol=1e-6):
                raise ConfigError(f"joint {j.name}: {bound} {mine} differs from {spec.env_id}'s action bound "
                                  f"{env_value} (dimension {i})", f"robot.joints[{i}].{bound}", source)
    obs = env.observation_space
    if not _all_boxes(obs):
        raise ConfigError(f"{spec.env_id} has observation space {obs}; only Box (or Dict/Tuple of Box) "
                          "observations can be published as a state vector", "gym.env_id", source)
    size = int(spaces.flatdim(obs))
    names = spec.observation_names
    if size != len(names):
        raise ConfigError(f"{spec.env_id}'s observation has {size} values ({obs}), the profile gives "
                          f"{len(names)}", "gym.observation", source)


def load_expert(profile: Profile) -> Callable[[Any], Any]:
    """The profile's `gym.expert` ("module:function") as a callable; ConfigError naming the field."""
    path, source = profile.gym.expert, profile.source
    if not path:
        raise ConfigError("no scripted expert: set gym.expert to 'module:function'", "gym.expert", source)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is a configuration problem here
        raise ConfigError(f"cannot import module {module_name!r} of {path!r}: {type(e).__name__}: {e}",
                          "gym.expert", source) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}", "gym.expert", source)
    if not callable(fn):
        raise ConfigError(f"{path!r} is a {type(fn).__name__}, not a callable", "gym.expert", source)
    return fn


class GymRobot:
    """The env behind the interface SimRobot offers (reset, actions, joint state, render, task state)."""

    def __init__(self, profile: Profile, seed: int = 0, render: bool = True):
        from gymnasium import spaces

        self.profile = profile
        self.spec = profile.gym
        self.camera = profile.cameras[0] if render and profile.cameras else None
        self.env = make_env(profile, render=self.camera is not None)
        self.obs_space = self.env.observation_space
        self._flatten = lambda obs: spaces.flatten(self.obs_space, obs)
        self.control_dt = 1.0 / float(profile.robot.control_rate_hz)
        self.physics_dt = self.control_dt  # one env step per control period
        self.home = np.array([j.home for j in profile.robot.joints], dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self._steps = 0  # env steps since construction -> monotonic time
        self.reset(seed)

    @property
    def time(self) -> float:
        return self._steps * self.control_dt

    def reset(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int(self._rng.integers(2 ** 31))
        self.seed = int(seed)
        self.obs, self.info = self.env.reset(seed=self.seed)
        self.action = self.home.copy()
        self.rate = np.zeros_like(self.home)
        self.terminated = self.truncated = self.succeeded = False
        self.episode_steps, self.episode_return = 0, 0.0

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def step(self, action: np.ndarray) -> None:
        """One env step with `action` (profile joint order); a done env holds its last observation."""
        action = np.asarray(action, dtype=np.float64)
        self.rate = (action - self.action) / self.control_dt
        self.action = action
        self._steps += 1
        if self.done:
            return
        space = self.env.action_space
        obs, reward, terminated, truncated, info = self.env.step(action.astype(space.dtype))
        self.obs, self.info = obs, info
        self.terminated, self.truncated = bool(terminated), bool(truncated)
        self.episode_steps += 1
        self.episode_return += float(reward)
        self.succeeded = self.succeeded or self._success(info)

    def _success(self, info: dict) -> bool:
        key, threshold = self.spec.success_key, self.spec.success_threshold
        if key in info:
            value = info[key]
            return bool(float(value) >= threshold) if threshold is not None else bool(value)
        return self.terminated and not self.truncated

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(action applied, its rate of change, zeros): the 'joints' of an env are its action dimensions."""
        return self.action.copy(), self.rate.copy(), np.zeros_like(self.action)

    def state(self) -> np.ndarray:
        return np.asarray(self._flatten(self.obs), dtype=np.float64)

    def render(self, camera: str) -> np.ndarray:
        """The env's rgb_array frame at the profile camera's size (resized when the env renders another)."""
        if self.camera is None or camera != self.camera.name:
            raise KeyError(f"unknown camera {camera!r}; rendered camera: {self.camera.name if self.camera else 'none'}")
        frame = np.asarray(self.env.render())
        if frame.shape[:2] != (self.camera.height, self.camera.width):
            import cv2

            frame = cv2.resize(frame, (self.camera.width, self.camera.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """A nominal pinhole (45 deg vertical field of view): gym renders carry no camera model."""
        cam = next((c for c in self.profile.cameras if c.name == camera), None)
        if cam is None:
            raise KeyError(f"unknown camera {camera!r}")
        f = 0.5 * cam.height / math.tan(0.5 * RENDER_FOVY)
        return f, f, 0.5 * cam.width, 0.5 * cam.height

    def task_state(self) -> dict:
        return {"success": self.succeeded, "done": self.done, "terminated": self.terminated,
                "truncated": self.truncated, "env_steps": self.episode_steps,
                "return": round(self.episode_return, 6), "seed": self.seed, "obs": _jsonable(self.obs)}

    def success(self) -> bool:
        return self.succeeded

    def close(self) -> None:
        self.env.close()


class GymDriver(DriverBase):
    """SimDriver's interface over a GymRobot: envelope, clocks, samples (see robot_rl/sim/driver.py)."""

    def __init__(self, profile: Profile, params: SimRobotParams, stamp_origin: float = 0.0):
        assert profile.sim is not None and profile.gym is not None
        self.profile = profile
        self.clock = profile.sim.clock if params.clock == "profile" else params.clock
        self.render = params.render and bool(profile.cameras)
        self.realtime_factor = params.realtime_factor
        seed = profile.sim.seed if params.seed < 0 else params.seed
        if params.drift.strip() not in ("", "none"):
            raise ConfigError(f"drift {params.drift!r} is a MuJoCo pick-place sim option; a gymnasium robot has no "
                              "joint targets to offset", "drift")
        self.robot = GymRobot(profile, seed=seed, render=self.render)
        self.envelope = SafetyEnvelope(profile.robot, profile.safety)
        self.envelope.reset(self.robot.action)
        self.stamp_origin = stamp_origin
        self.lock = threading.Lock()  # guards robot + envelope between the sim thread and callbacks
        self.steps_per_control = 1
        self.episode = 0

    def reset(self, seed: int | None = None) -> dict:
        with self.lock:
            self.robot.reset(seed)
            self.envelope.reset(self.robot.action)
            return self._episode_started()

    def advance(self, n_steps: int) -> list[Sample]:
        """Realtime: `n_steps` env steps (one per control period), every stream sampled after each."""
        samples: list[Sample] = []
        with self.lock:
            for _ in range(n_steps):
                self._env_step()
                samples.extend(self._capture_all())
        return samples

    def step_control(self) -> list[Sample]:
        """Lockstep: one env step, then one sample of every stream."""
        return self.advance(1)

    def observe_all(self) -> list[Sample]:
        with self.lock:
            return self._capture_all()

    def _env_step(self) -> None:
        dt = self.robot.control_dt
        # the stamp at the end of this step: the watchdog measures command age like SimDriver's last physics step
        now = self.stamp(self.robot.time + dt)
        self.robot.step(self.envelope.setpoint(self.robot.action, now, dt))

    def _capture_all(self) -> list[Sample]:
        stamp = self.stamp()
        samples = [Sample("joint_state", "", stamp, self.robot.joint_state()),
                   Sample("state", "", stamp, self.robot.state()),
                   Sample("task_state", "", stamp, {**self.robot.task_state(), "episode": self.episode})]
        if self.render:
            cam = self.profile.cameras[0].name
            samples.append(Sample("color", cam, stamp, self.robot.render(cam)))
        return samples

    def diagnostics(self) -> dict[str, str]:
        with self.lock:
            values = self.envelope.diagnostics()
            values.update({"clock": self.clock, "sim_time": f"{self.robot.time:.3f}", "episode": str(self.episode),
                           "env": self.profile.gym.env_id, "env_done": str(self.robot.done).lower()})
        return values

    def close(self) -> None:
        self.robot.close()


class GymExpert:
    """The profile's gym.expert behind ScriptedExpert's interface (reset(seed), act(joints, task_state)),
    for the teleop node's `expert` device: Gaussian action noise with a standard deviation of
    `noise` x 5 % of each joint's range, clipped to the limits."""

    NOISE_FRACTION = 0.05

    def __init__(self, profile: Profile, seed: int = 0, noise: float = 1.0):
        self.fn = load_expert(profile)
        self.path = profile.gym.expert
        self.noise = float(noise)
        self.lower = np.array([j.lower for j in profile.robot.joints])
        self.upper = np.array([j.upper for j in profile.robot.joints])
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng([int(seed or 0), 0x6E])

    def act(self, joint_pos: np.ndarray, task_state: dict) -> np.ndarray:
        action = np.asarray(self.fn(_arrays(task_state["obs"])), dtype=np.float64).reshape(-1)
        if action.shape != self.lower.shape:
            raise ValueError(f"expert {self.path} returned {action.size} values, "
                             f"the robot has {self.lower.size} joints")
        if self.noise > 0:
            std = self.NOISE_FRACTION * self.noise * (self.upper - self.lower)
            action = action + self.rng.normal(0.0, 1.0, action.shape) * std
        return np.clip(action, self.lower, self.upper)


def run_expert_episodes(profile: Profile, episodes: int, seed: int = 0, noise: float = 0.0,
                        max_steps: int = 1000) -> list[dict]:
    """The expert on the bare env (no ROS): per-episode success, steps and return."""
    robot = GymRobot(profile, seed=seed, render=False)
    expert = GymExpert(profile, seed=seed, noise=noise)
    results = []
    try:
        for i in range(episodes):
            robot.reset(seed + i)
            expert.reset(seed + i)
            while not (robot.succeeded or robot.done) and robot.episode_steps < max_steps:
                robot.step(expert.act(robot.action, robot.task_state()))
            results.append({"success": robot.succeeded, "steps": robot.episode_steps, "return": robot.episode_return})
    finally:
        robot.close()
    return results
