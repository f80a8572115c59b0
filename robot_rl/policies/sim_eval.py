"""Quick in-process evaluation on SimRobot (no ROS): for development and training-budget studies.
The real evaluation goes through the ROS graph (`robot-rl eval`); this one builds observations the
way the recorder does (per control step: joint positions, rendered cameras, taxels), keeps an
obs_horizon history padded with the first observation, and executes exec_horizon actions of each
chunk open-loop.

    python -m robot_rl.policies.sim_eval runs/diffusion --episodes 50 --seed 1000
"""
from __future__ import annotations

import argparse
import json
import time
from collections import deque

import numpy as np

from robot_rl.data.recording import camera_key, tactile_key
from robot_rl.sim.scene import CUBE_HALF


def observe(robot, profile) -> dict[str, np.ndarray]:
    pos, vel, _ = robot.joint_state()
    obs = {"obs/joint_pos": pos.astype(np.float32), "obs/joint_vel": vel.astype(np.float32)}
    for cam in profile.cameras:
        obs[camera_key(cam.name)] = robot.render(cam.name)[0]
    for tac in profile.tactile:
        obs[tactile_key(tac.name)] = robot.tactile(tac.name)
    return obs


class OpenLoopChunks:
    """A base policy's actions the way the policy node runs it in lockstep: an obs_horizon history
    padded with the first observation, each chunk's exec_horizon actions open loop, chunks back to back.
    With `features`, `self.features` holds the base encoder's features of the current chunk's window."""

    def __init__(self, policy, seed: int, features: bool = False):
        self.policy, self.seed, self.want_features = policy, seed, features
        self.history: deque = deque(maxlen=policy.obs_horizon)
        self.queue: list[np.ndarray] = []
        self.chunks = 0
        self.features: np.ndarray | None = None

    def next(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """(action, phase = its index in the current chunk) for this step's observation."""
        self.history.append({k: obs[k] for k in self.policy.obs_keys})
        while len(self.history) < self.policy.obs_horizon:
            self.history.appendleft(self.history[0])
        if not self.queue:
            window = {k: np.stack([h[k] for h in self.history]) for k in self.policy.obs_keys}
            chunk = self.policy.predict(window, seed=self.seed * 1000 + self.chunks)
            self.queue = list(chunk[:self.policy.exec_horizon])
            self.chunks += 1
            if self.want_features:
                self.features = self.policy.features(window).numpy()
        phase = self.policy.exec_horizon - len(self.queue)
        return self.queue.pop(0), phase


LIFTED_Z = CUBE_HALF + 0.02  # cube centre this high: it was picked up at least once
OUTCOMES = ("success", "never_lifted", "held", "off_target", "off_table")


def run_episode(policy, robot, profile, seed: int, max_steps: int = 150) -> dict:
    robot.reset(seed)
    n_sub = max(1, int(round(robot.control_dt / robot.physics_dt)))
    base = OpenLoopChunks(policy, seed)
    lifted = False
    for step in range(1, max_steps + 1):
        robot.set_target(base.next(observe(robot, profile))[0])
        robot.step_physics(n_sub)
        if robot.success():
            return {"seed": seed, "success": True, "steps": step, "outcome": "success"}
        lifted = lifted or robot.task.cube_pos(robot.data)[2] > LIFTED_Z
    return {"seed": seed, "success": False, "steps": max_steps, **failure(robot.task_state(), lifted)}


def failure(state: dict, lifted: bool) -> dict:
    """Why an episode failed, from the final task state: the cube fell off the table, was never
    picked up, is still held, in the air or not lying flat, or was set down `miss_cm` from the target
    (success needs <= 2 cm)."""
    cube, target = np.asarray(state["cube_pos"]), np.asarray(state["target_pos"])
    miss_cm = round(float(np.hypot(*(cube[:2] - target[:2]))) * 100, 2)
    if cube[2] < 0:  # below the table top
        outcome = "off_table"
    elif not lifted:
        outcome = "never_lifted"
    elif state["grasped"] or cube[2] > CUBE_HALF + 0.004:
        outcome = "held"
    else:
        outcome = "off_target"
    return {"outcome": outcome, "miss_cm": miss_cm}


def outcome_summary(details: list[dict]) -> dict:
    """Counts per outcome and the set-down misses of off-target failures (cm)."""
    counts = {k: sum(d["outcome"] == k for d in details) for k in OUTCOMES}
    misses = sorted(d["miss_cm"] for d in details if d["outcome"] == "off_target")
    return {"outcomes": counts, "off_target_miss_cm": {"median": float(np.median(misses)), "max": misses[-1]}
            if misses else {}}


def evaluate(policy, profile, episodes: int, seed: int, max_steps: int = 150, progress: bool = False,
             details: list | None = None, drift: dict[str, float] | None = None) -> list[bool]:
    """Success of each of `episodes` episodes with layouts seed, seed+1, ... (one SimRobot, drifted
    joints as `robot_rl.sim.robot` describes)."""
    from robot_rl.sim import SimRobot

    from tqdm import tqdm

    results = []
    with SimRobot(profile, seed=seed, render=True, drift=drift) as robot:
        bar = tqdm(range(episodes), disable=not progress, unit="episode", dynamic_ncols=True)
        for i in bar:
            r = run_episode(policy, robot, profile, seed + i, max_steps)
            results.append(r["success"])
            if details is not None:
                details.append(r)
            bar.set_postfix(success=f"{sum(results)}/{len(results)}")
    return results


def main(argv: list[str] | None = None) -> int:
    import torch

    from robot_rl.config import load_profile
    from robot_rl.policies.policy import load_policy
    from robot_rl.sim.robot import parse_drift
    from robot_rl.stats import wilson

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--profile", default="sim")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--ddim-steps", type=int, default=None, help="diffusion: override inference steps")
    p.add_argument("--spacing", choices=["trailing", "leading"], default=None, help="diffusion: DDIM timesteps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--drift", default="", metavar="JOINT=RAD[,...]", help="joints settle this far from their targets")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    drift = parse_drift(args.drift, list(profile.robot.joint_names))
    policy = load_policy(args.checkpoint, profile)
    if args.ddim_steps:
        policy.config.inference_steps = args.ddim_steps
    if args.spacing:
        policy.model.scheduler.spacing = args.spacing
    t0, details = time.monotonic(), []
    wins = sum(evaluate(policy, profile, args.episodes, args.seed, args.max_steps, progress=True, details=details,
                        drift=drift))
    lo, hi = wilson(wins, args.episodes)
    print(json.dumps({"checkpoint": str(policy.checkpoint.path), "policy": policy.policy_class,
                      "sha256": policy.checkpoint_hash[:12], "episodes": args.episodes, "seed": args.seed,
                      "successes": wins, "rate": round(wins / args.episodes, 3), "wilson95": [round(lo, 3), round(hi, 3)],
                      "mean_steps_success": round(float(np.mean([d["steps"] for d in details if d["success"]] or [0])), 1),
                      **outcome_summary(details), "drift": drift, "wall_s": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
