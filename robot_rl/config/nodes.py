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
    camera_delay_s: float = 0.0  # images show the scene this long before their stamp (latency calibration tests)
    drift: str = ""  # "waist=0.05,...": joints settle this far (rad) from their targets (robot changed since the demos)
    # lockstep only: control steps per episode, after which commands are refused until the next reset
    # (0 = no limit); `robot-rl finetune` and `robot-rl eval` set it to their --max-steps
    episode_steps: int = 0

    def validate(self) -> None:
        check(self.realtime_factor > 0, f"must be positive, got {self.realtime_factor}", "realtime_factor")
        check(0 <= self.camera_delay_s <= 1.0, f"must be in [0, 1] s, got {self.camera_delay_s}", "camera_delay_s")
        check(self.episode_steps >= 0, f"must be >= 0 (0 = no limit), got {self.episode_steps}", "episode_steps")


@dataclass
class CameraNodeParams:
    """One RealSense camera (one node per camera, DESIGN.md §3)."""

    camera: str = ""  # profile camera name; "" = the node's own name
    playback_file: str = ""  # a recorded .db3 to play instead of a live device (tests, offline replay)
    playback_loop: bool = True  # replay the file from the start when it ends
    retry_max_s: float = 10.0  # device loss -> retry with back-off up to this period

    def validate(self) -> None:
        check(self.retry_max_s > 0, f"must be positive, got {self.retry_max_s}", "retry_max_s")


@dataclass
class TactileNodeParams:
    """One serial taxel sensor."""

    sensor: str = ""  # profile tactile sensor name; "" = the node's own name
    retry_max_s: float = 5.0  # port missing/lost -> reopen with back-off up to this period
    no_frames_timeout_s: float = 2.0  # port open but no valid frame for this long -> error in diagnostics
    calibration_file: str = ""  # "" = calibration/<profile name>/<sensor>.yaml (zero baseline if absent)

    def validate(self) -> None:
        check(self.retry_max_s > 0, f"must be positive, got {self.retry_max_s}", "retry_max_s")
        check(self.no_frames_timeout_s > 0, f"must be positive, got {self.no_frames_timeout_s}", "no_frames_timeout_s")


@dataclass
class RobotNodeParams:
    """The real follower arm (robot.driver = dynamixel) behind the safety envelope."""

    retry_max_s: float = 5.0  # port missing / wrong baud / adapter unplugged -> retry with back-off up to this
    home_speed_scale: float = 0.25  # /robot/reset moves home at this fraction of each joint's max_velocity
    torque_off_on_exit: bool = True  # False keeps the arm stiff after the node exits (arms that fall when limp)

    def validate(self) -> None:
        check(self.retry_max_s > 0, f"must be positive, got {self.retry_max_s}", "retry_max_s")
        check(0 < self.home_speed_scale <= 1, f"must be in (0, 1], got {self.home_speed_scale}", "home_speed_scale")


@dataclass
class TeleopParams:
    """A teleop device publishing /teleop/command (and /robot/command when it drives the robot alone)."""

    device: Literal["expert", "keyboard", "spacemouse", "leader_arm"] = "keyboard"
    drive_robot: bool = True  # also publish /robot/command (collection without a policy)
    expert_noise: float = 1.0  # sim scripted expert only
    expert_corrections: float = 0.0  # MuJoCo sim expert: share of episodes set down off target, then corrected
    seed: int = 0
    # observation: one tick per new sim step (a lockstep sim), the command stamped with that step's
    # stamp; collection runs as fast as the CPU allows instead of at the wall-clock control rate
    tick: Literal["timer", "observation"] = "timer"
    jog_step: float = 0.05  # keyboard/SpaceMouse: rad (or m for the gripper) per tick at full deflection

    def validate(self) -> None:
        check(self.expert_noise >= 0, f"must be >= 0, got {self.expert_noise}", "expert_noise")
        check(0 <= self.expert_corrections <= 1, f"must be in [0, 1], got {self.expert_corrections}",
              "expert_corrections")
        check(self.jog_step > 0, f"must be positive, got {self.jog_step}", "jog_step")


@dataclass
class RecorderParams:
    """The store's only writer during operation (DESIGN.md §5)."""

    store: str = "data/{profile}.zarr"  # {profile} is replaced by the profile name
    mode: Literal["teleop", "rollout"] = "teleop"  # teleop: tick at the control rate; rollout: on policy command stamps
    tick: Literal["timer", "command"] = "timer"  # teleop mode: command = one tick per teleop command stamp (lockstep)
    base_checkpoint: str = ""  # rollout: the base policy acting; its hash is stored with each episode
    record_depth: bool = False
    start_timeout_s: float = 5.0  # start waits this long for every stream to be fresh, then refuses
    min_rate_fraction: float = 0.9  # health bar: achieved rate vs control rate
    max_invalid_fraction: float = 0.05  # health bar: ticks without a valid observation

    def validate(self) -> None:
        check(bool(self.store), "must name a store path", "store")
        check(self.start_timeout_s > 0, f"must be positive, got {self.start_timeout_s}", "start_timeout_s")
        check(0 < self.min_rate_fraction <= 1, f"must be in (0, 1], got {self.min_rate_fraction}", "min_rate_fraction")
        check(0 <= self.max_invalid_fraction < 1, f"must be in [0, 1), got {self.max_invalid_fraction}",
              "max_invalid_fraction")


@dataclass
class PolicyParams:
    """The policy on the robot: base chunks from a worker thread, executed at the control rate."""

    checkpoint: str = ""  # base policy checkpoint directory
    tick: Literal["timer", "observation"] = "timer"  # observation: one tick per new observation (lockstep sim)
    lead_steps: int = 2  # ask for the next chunk this many ticks before the current one runs out
    ensemble_k: float = 0.0  # temporal ensembling weight (0 = off)
    enabled: bool = False  # act from the start (else wait for /policy/enable)
    seed: int = 0
    residual: bool = False  # fine-tuning: add the learner's residual (weights on /learner/residual_weights)
    rl_preset: str = "cpu_small"  # must match the learner's, so the weights' architecture can be checked
    rl_config: str = ""  # or the learner's YAML config (preset + overrides); it replaces rl_preset
    residual_weights: str = ""  # deploy a fine-tuned residual: a learner checkpoint dir (or its run dir)
    explore: bool = True  # with residual: exploration noise as the learner's metadata says
    interventions: bool = True  # HIL: while /teleop/intervening is true, the teleop command is executed instead

    def validate(self) -> None:
        check(self.lead_steps >= 0, f"must be >= 0, got {self.lead_steps}", "lead_steps")
        check(self.ensemble_k >= 0, f"must be >= 0, got {self.ensemble_k}", "ensemble_k")


@dataclass
class EpisodeManagerParams:
    """Runs a fine-tuning session: reset -> record (rollout) -> policy acts -> end -> label -> commit."""

    episodes: int = 0  # stop after this many committed episodes (0 = until stopped)
    max_steps: int = 150  # control steps before an episode times out
    reset: Literal["auto", "operator"] = "auto"  # operator: wait for /episode_manager/continue between episodes
    # who says success: sim ground truth, the operator, or a reward classifier (robot-rl train-reward)
    label: Literal["sim", "operator", "classifier"] = "sim"
    reward_checkpoint: str = ""  # label classifier: the classifier directory (robot-rl train-reward --out)
    step_timeout_s: float = 10.0  # no control step for this long -> the episode is aborted and discarded
    # HIL: no episode starts before the operator's teleop node is heard on /teleop/intervening (a
    # loaded machine can bring it up after the first episode would have ended without its help)
    await_operator: bool = False
    # no episode before this many subscriptions to /episode/events have matched (a session client that
    # counts episodes, e.g. robot-rl finetune's): a lockstep episode can end before discovery is done
    await_listeners: int = 0

    def validate(self) -> None:
        check(self.episodes >= 0, f"must be >= 0, got {self.episodes}", "episodes")
        check(self.await_listeners >= 0, f"must be >= 0, got {self.await_listeners}", "await_listeners")
        check(self.max_steps > 0, f"must be positive, got {self.max_steps}", "max_steps")
        check(self.step_timeout_s > 0, f"must be positive, got {self.step_timeout_s}", "step_timeout_s")
        check(self.label != "classifier" or bool(self.reward_checkpoint),
              "label 'classifier' needs reward_checkpoint: the directory robot-rl train-reward wrote",
              "reward_checkpoint")


@dataclass
class LearnerParams:
    """The asynchronous residual learner: follows the store, trains, streams weights to the policy."""

    store: str = "data/{profile}.zarr"
    base_checkpoint: str = ""  # the frozen base policy the residual corrects
    preset: str = "cpu_small"  # robot_rl.rl presets: recipe | cpu_small | tiny
    config: str = ""  # optional YAML of ResidualRLConfig overrides
    run_dir: str = "runs/learner"  # checkpoints (resumed from when present)
    publish_every: int = 50  # critic updates between weight messages
    checkpoint_every_s: float = 60.0
    threads: int = 1  # torch threads (1 is fastest on a shared 2-core machine)

    def validate(self) -> None:
        check(self.publish_every >= 1, f"must be >= 1, got {self.publish_every}", "publish_every")
        check(self.checkpoint_every_s > 0, f"must be positive, got {self.checkpoint_every_s}", "checkpoint_every_s")
        check(self.threads >= 1, f"must be >= 1, got {self.threads}", "threads")


# executable name -> "module:Class" of its params (imported lazily so nothing heavy loads here)
NODE_PARAMS: dict[str, str] = {
    "sim_robot_node": "robot_rl.config.nodes:SimRobotParams",
    "camera_node": "robot_rl.config.nodes:CameraNodeParams",
    "tactile_node": "robot_rl.config.nodes:TactileNodeParams",
    "robot_node": "robot_rl.config.nodes:RobotNodeParams",
    "teleop_node": "robot_rl.config.nodes:TeleopParams",
    "recorder_node": "robot_rl.config.nodes:RecorderParams",
    "policy_node": "robot_rl.config.nodes:PolicyParams",
    "episode_manager_node": "robot_rl.config.nodes:EpisodeManagerParams",
    "learner_node": "robot_rl.config.nodes:LearnerParams",
}


def node_params_class(executable: str) -> type:
    if executable not in NODE_PARAMS:
        raise ConfigError(f"unknown executable {executable!r}; known: {', '.join(sorted(NODE_PARAMS))}", "executable")
    module, cls = NODE_PARAMS[executable].split(":")
    return getattr(importlib.import_module(module), cls)
