"""The hardware profile: one typed description of a setup (robot, sensors, safety, nodes)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robot_rl.config.kinematics import KinematicsSpec
from robot_rl.config.typed import ConfigError, check, from_dict, load_file
from robot_rl.paths import profile_dirs

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(name: str, what: str) -> None:
    check(bool(NAME_RE.match(name)), f"{what} {name!r} must be lower_snake_case (it becomes part of ROS names)", "name")


def _check_unique(names: list[str], what: str, where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    check(not dup, f"duplicate {what} name(s): {', '.join(dup)}", where)


@dataclass
class JointSpec:
    name: str
    lower: float  # rad (or m for prismatic joints)
    upper: float
    max_velocity: float  # rad/s
    home: float = 0.0

    def validate(self) -> None:
        check(self.lower < self.upper, f"lower ({self.lower}) must be below upper ({self.upper})", "lower")
        check(self.lower <= self.home <= self.upper, f"home {self.home} is outside [{self.lower}, {self.upper}]", "home")
        check(self.max_velocity > 0, f"must be positive, got {self.max_velocity}", "max_velocity")


@dataclass
class RobotSpec:
    driver: Literal["mujoco_sim", "dynamixel", "gymnasium"]
    joints: list[JointSpec]
    control_rate_hz: float
    state_rate_hz: float
    gripper_joint: str = ""

    def validate(self) -> None:
        check(len(self.joints) > 0, "at least one joint is required", "joints")
        _check_unique([j.name for j in self.joints], "joint", "joints")
        check(self.control_rate_hz > 0, f"must be positive, got {self.control_rate_hz}", "control_rate_hz")
        check(self.state_rate_hz >= self.control_rate_hz,
              f"state rate {self.state_rate_hz} Hz must be at least the control rate {self.control_rate_hz} Hz",
              "state_rate_hz")
        check(not self.gripper_joint or self.gripper_joint in self.joint_names,
              f"{self.gripper_joint!r} is not one of the joints ({', '.join(self.joint_names)})", "gripper_joint")

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]


@dataclass
class CameraSpec:
    name: str
    width: int
    height: int
    fps: float
    depth: bool = True
    serial: str = ""  # RealSense serial number (real setups)
    auto_exposure: bool = False  # fixed exposure/white balance unless asked: learning wants stable images
    exposure_us: float = 8000.0
    auto_white_balance: bool = False
    white_balance_k: float = 4600.0

    def validate(self) -> None:
        _check_name(self.name, "camera")
        check(self.width > 0 and self.height > 0, f"resolution {self.width}x{self.height} must be positive", "width")
        check(self.fps > 0, f"must be positive, got {self.fps}", "fps")


@dataclass
class TactileSpec:
    name: str
    rows: int
    cols: int
    rate_hz: float
    port: str = ""  # serial device (real setups), e.g. /dev/robot_rl/tactile_left
    baud: int = 2_000_000

    def validate(self) -> None:
        _check_name(self.name, "tactile sensor")
        check(self.baud > 0, f"must be positive, got {self.baud}", "baud")
        check(self.rows > 0 and self.cols > 0, f"taxel grid {self.rows}x{self.cols} must be positive", "rows")
        check(self.rate_hz > 0, f"must be positive, got {self.rate_hz}", "rate_hz")


@dataclass
class ServoSpec:
    """One Dynamixel servo driving one profile joint: joint = direction * servo_angle + offset.

    servo_angle is in rad, 0 at tick 2048, 4096 ticks per turn. For a gripper, `servo_range` maps
    servo angles [at joint.lower, at joint.upper] (rad) linearly onto the joint's range instead, so
    the profile's gripper units stay those of the joint (direction and offset are then unused).
    `mode` is the servo's operating mode, written at start: position (one turn, ticks 0..4095),
    extended_position (multi-turn) or current_position (multi-turn, current-limited: grippers).
    """

    joint: str
    id: int
    direction: int = 1
    offset: float = 0.0  # rad
    servo_range: list[float] = field(default_factory=list)  # [angle at joint.lower, angle at joint.upper]
    mode: Literal["position", "extended_position", "current_position"] = "position"

    def validate(self) -> None:
        check(0 <= self.id <= 252, f"Dynamixel id must be 0..252, got {self.id}", "id")
        check(self.direction in (1, -1), f"must be 1 or -1, got {self.direction}", "direction")
        check(len(self.servo_range) in (0, 2), "must be [angle_at_lower, angle_at_upper] or omitted", "servo_range")
        check(len(self.servo_range) != 2 or self.servo_range[0] != self.servo_range[1],
              f"the two angles must differ, got {self.servo_range}", "servo_range")


@dataclass
class DynamixelBusSpec:
    """A chain of Protocol 2.0 servos on one serial port (follower arm or leader arm)."""

    port: str
    servos: list[ServoSpec]
    baud: int = 1_000_000

    def validate(self) -> None:
        check(len(self.servos) > 0, "at least one servo is required", "servos")
        _check_unique([str(s.id) for s in self.servos], "servo id", "servos")
        _check_unique([s.joint for s in self.servos], "servo joint", "servos")
        check(self.baud > 0, f"must be positive, got {self.baud}", "baud")


@dataclass
class SafetySpec:
    """Robot-side envelope (DESIGN.md §7); holds whatever the policy or learner does."""

    command_timeout_periods: int = 3  # no fresh command for this many control periods -> hold
    velocity_scale: float = 1.0  # fraction of each joint's max_velocity a command may demand

    def validate(self) -> None:
        check(self.command_timeout_periods >= 1, "must be at least 1", "command_timeout_periods")
        check(0 < self.velocity_scale <= 1, f"must be in (0, 1], got {self.velocity_scale}", "velocity_scale")


@dataclass
class SimSpec:
    task: Literal["pick_place", "gym"] = "pick_place"  # gym: the env of the `gym:` section (robot.driver gymnasium)
    clock: Literal["realtime", "lockstep"] = "realtime"
    physics_dt: float = 0.002
    seed: int = 0

    def validate(self) -> None:
        check(0 < self.physics_dt <= 0.01, f"must be in (0, 0.01] s, got {self.physics_dt}", "physics_dt")


EXPERT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class GymSpec:
    """A gymnasium environment as the sim robot (robot.driver: gymnasium; robot_rl/sim/gym_adapter.py).

    Each profile joint is one action dimension (limits = the action Box bounds, checked at start);
    the observation vector is published on /robot/state and recorded as obs/state. Success: the
    info key `success_key` (truthy, or >= `success_threshold` when set); if the env's info lacks
    that key, terminated without truncation counts as success.
    """

    env_id: str  # registered id, or "module:EnvId-v0" (gymnasium imports the module that registers it)
    observation: int | list[str]  # the (flattened) observation: its size, or one name per value
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    expert: str = ""  # "module:function": observation -> action (scripted expert for `collect`)
    success_key: str = "is_success"
    success_threshold: float | None = None  # success when info[success_key] >= this (None: truthy)
    max_episode_steps: int = 0  # 0 = the env's registered time limit

    def validate(self) -> None:
        check(bool(self.env_id.strip()), "must name a gymnasium environment id", "env_id")
        check(not self.expert or bool(EXPERT_RE.match(self.expert)),
              f"must be 'module:function' (e.g. robot_rl.sim.gym_experts:reacher_expert), got {self.expert!r}",
              "expert")
        check(bool(self.success_key), "must name an info key", "success_key")
        check(self.max_episode_steps >= 0, f"must be >= 0, got {self.max_episode_steps}", "max_episode_steps")
        check("render_mode" not in self.kwargs, "render_mode is set by the adapter (rgb_array when the profile "
              "lists a camera)", "kwargs.render_mode")
        if isinstance(self.observation, int):
            check(self.observation > 0, f"must be positive, got {self.observation}", "observation")
        else:
            check(len(self.observation) > 0, "name at least one observation value", "observation")
            _check_unique(list(self.observation), "observation value", "observation")

    @property
    def observation_names(self) -> list[str]:
        if isinstance(self.observation, int):
            return [f"obs_{i}" for i in range(self.observation)]
        return list(self.observation)


MODES = ("robot", "collect", "deploy", "finetune")
Mode = Literal["robot", "collect", "deploy", "finetune"]


@dataclass
class NodeSpec:
    """One node of the setup. `modes` says in which ways of using the setup it runs: `robot` (just the
    robot and its sensors), `collect` (teleop data collection), `deploy` (policy), `finetune` (RL)."""

    name: str
    executable: str
    params: dict[str, Any] = field(default_factory=dict)
    modes: list[Mode] = field(default_factory=lambda: list(MODES))

    def validate(self) -> None:
        from robot_rl.config.nodes import node_params_class

        check(bool(re.match(r"^[a-zA-Z][a-zA-Z0-9_]*$", self.name)), f"node name {self.name!r} is not a valid ROS name", "name")
        cls = node_params_class(self.executable)  # raises ConfigError for unknown executables
        try:
            from_dict(cls, self.params)
        except ConfigError as e:
            raise ConfigError(e.problem, f"params.{e.field}" if e.field else "params") from None


@dataclass
class Profile:
    name: str
    robot: RobotSpec
    description: str = ""
    cameras: list[CameraSpec] = field(default_factory=list)
    tactile: list[TactileSpec] = field(default_factory=list)
    safety: SafetySpec = field(default_factory=SafetySpec)
    sim: SimSpec | None = None
    gym: GymSpec | None = None  # robot.driver == gymnasium
    follower: DynamixelBusSpec | None = None  # robot.driver == dynamixel
    leader: DynamixelBusSpec | None = None  # leader arm for teleoperation
    nodes: list[NodeSpec] = field(default_factory=list)
    kinematics: KinematicsSpec = field(default_factory=KinematicsSpec)  # arm chain for FK (hand-eye); optional
    source: str = field(default="", init=False)  # the file it came from

    def validate(self) -> None:
        _check_unique([c.name for c in self.cameras], "camera", "cameras")
        _check_unique([t.name for t in self.tactile], "tactile sensor", "tactile")
        _check_unique([n.name for n in self.nodes], "node", "nodes")
        check(self.robot.driver != "mujoco_sim" or self.sim is not None,
              "robot.driver is mujoco_sim, so a 'sim:' section is required", "sim")
        if self.robot.driver == "mujoco_sim":
            check(self.sim.task == "pick_place", "robot.driver is mujoco_sim, so sim.task must be pick_place", "sim.task")
        self._validate_gym()
        check(self.robot.driver != "dynamixel" or self.follower is not None,
              "robot.driver is dynamixel, so a 'follower:' bus section is required", "follower")
        self.kinematics.check_joints(self.robot.joint_names)
        for bus_name in ("follower", "leader"):
            bus = getattr(self, bus_name)
            for i, servo in enumerate(bus.servos if bus else []):
                check(servo.joint in self.robot.joint_names,
                      f"{servo.joint!r} is not a robot joint ({', '.join(self.robot.joint_names)})",
                      f"{bus_name}.servos[{i}].joint")

    def _validate_gym(self) -> None:
        if self.robot.driver != "gymnasium":
            check(self.gym is None, f"a 'gym:' section needs robot.driver gymnasium (not {self.robot.driver})", "gym")
            return
        check(self.gym is not None, "robot.driver is gymnasium, so a 'gym:' section is required", "gym")
        check(self.sim is not None and self.sim.task == "gym",
              "robot.driver is gymnasium, so a 'sim:' section with task: gym is required (its clock and seed apply)",
              "sim.task" if self.sim is not None else "sim")
        check(self.robot.state_rate_hz == self.robot.control_rate_hz,
              f"a gymnasium env gives one observation per step: state_rate_hz ({self.robot.state_rate_hz}) must "
              f"equal control_rate_hz ({self.robot.control_rate_hz})", "robot.state_rate_hz")
        check(not self.tactile, "a gymnasium env has no tactile sensors", "tactile")
        check(len(self.cameras) <= 1, "a gymnasium env renders one view: list at most one camera", "cameras")
        check(not self.cameras or not self.cameras[0].depth, "a gymnasium env renders no depth image",
              "cameras[0].depth")

    @property
    def state_names(self) -> list[str]:
        """Names of the low-dim state vector on /robot/state (obs/state in the store); [] if none."""
        return self.gym.observation_names if self.gym is not None else []

    def nodes_for(self, mode: str) -> list[NodeSpec]:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        return [n for n in self.nodes if mode in n.modes]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"profile has no node named {name!r} (nodes: {', '.join(n.name for n in self.nodes)})",
                          "nodes", self.source)

    def node_params(self, name: str, overrides: dict[str, Any] | None = None):
        """The typed params of node `name`, with `overrides` (e.g. ROS parameters) applied."""
        from robot_rl.config.nodes import node_params_class

        spec = self.node(name)
        try:
            return from_dict(node_params_class(spec.executable), {**spec.params, **(overrides or {})})
        except ConfigError as e:
            raise ConfigError(e.problem, f"nodes[{name}].params.{e.field}", self.source) from None


def available_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs():
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            found.setdefault(f.stem, f)
    return found


def resolve_profile(name_or_path: str) -> Path:
    """A profile file from a path or a bare name; unknown names list the available ones."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not p.is_file():
            raise ConfigError(f"profile file not found: {p}")
        return p
    profiles = available_profiles()
    if name_or_path not in profiles:
        listing = ", ".join(profiles) or "none"
        where = ", ".join(str(d) for d in profile_dirs())
        raise ConfigError(f"unknown profile {name_or_path!r}; available profiles: {listing} (searched {where})")
    return profiles[name_or_path]


def load_profile(name_or_path: str = "sim") -> Profile:
    path = resolve_profile(name_or_path)
    profile = load_file(Profile, path)
    profile.source = str(path.resolve())
    return profile
