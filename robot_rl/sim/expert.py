"""A noisy, imperfect scripted pick-and-place expert (demonstration source and baseline).

It reads privileged task state (cube and target pose), plans in Cartesian space (tcp pointing down,
fingers aligned with the cube) and converts to joints with closed-form IK on its own copy of the
model. Phases: approach -> descend -> close -> lift -> transport -> lower -> release -> retreat; a
failed grasp (cube not between the fingers after lifting, or dropped in transit) reopens and retries.

`noise` scales every imperfection (0 = clean): Gaussian joint noise, grasp position/yaw/height
offsets, a placement offset, and occasional hesitation. `corrections` is the share of episodes in
which it first lowers the cube over a point 2-4 cm off the target and, just above the table, moves
it over the target while setting it down, as a teleoperator watching the wrist camera does (without
such demonstrations a BC policy that arrives off target sets the cube down there anyway; see
docs/policies.md for what they changed). Whatever it does, consecutive targets move each joint by
at most max_velocity * velocity_scale * control_dt, so the safety filter never clips it.
"""
from __future__ import annotations

import math

import numpy as np

import mujoco

from robot_rl.sim.ik import ArmIK, quat_yaw, tcp_pose
from robot_rl.sim.scene import CUBE_HALF, build_model

HOVER = 0.07  # tcp above the cube centre before descending
CARRY_Z = 0.12  # tcp height while carrying
RETREAT_Z = 0.15
GRASP_DZ = 0.004  # tcp above the cube centre when closing (keeps fingertips off the table)
RELEASE_GAP = 0.004  # cube bottom above the table when opening
OPEN, CLOSED = 0.04, 0.0

# imperfections at noise = 1
ACTION_STD = 0.008  # rad, per arm joint per step
GRASP_XY_STD = 0.004  # m
GRASP_YAW_STD = 0.08  # rad
GRASP_Z_STD = 0.002  # m
PLACE_XY_STD = 0.009  # m
RELEASE_Z_STD = 0.004  # m, extra (one-sided) release height
HESITATE_P = 0.03  # per step
HESITATE_STEPS = (2, 6)
CORRECTION_MISS = (0.02, 0.04)  # m, how far off target a correcting episode first lowers the cube
CORRECTION_DZ = 0.025  # m, above the release height: where it turns toward the target

# Cartesian speed per control step for each phase (m)
_CART_STEP = {"approach": 0.045, "descend": 0.02, "lift": 0.03, "transport": 0.045, "lower": 0.02,
              "retreat": 0.04, "reopen": 0.03, "correct": 0.015}


class ScriptedExpert:
    def __init__(self, profile, seed: int = 0, noise: float = 1.0, corrections: float = 0.0):
        self.model = build_model(profile)  # a private copy: FK/IK scratch never touches the robot's data
        self._data = mujoco.MjData(self.model)
        self.ik = ArmIK(self.model)
        self.noise = float(noise)
        self.corrections = float(corrections)
        self.control_dt = 1.0 / float(profile.robot.control_rate_hz)
        joints = profile.robot.joints
        scale = profile.safety.velocity_scale
        self.max_step = np.array([j.max_velocity for j in joints]) * scale * self.control_dt * (1 - 1e-6)
        self.lower = np.array([j.lower for j in joints])
        self.upper = np.array([j.upper for j in joints])
        self._seed_rng = np.random.default_rng(seed)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int(self._seed_rng.integers(2 ** 31))
        self.rng = np.random.default_rng([int(seed), 0x5E])  # independent of the robot's layout stream
        self.done = False
        self.phase = "approach"
        self.phase_steps = 0
        self.attempts = 0
        self._last = None  # previous target (np array)
        self._tcp = None  # commanded tcp position
        self._roll = 0.0
        self._grip = OPEN
        self._hold = 0  # hesitation steps left
        self._in_hand = np.zeros(3)
        self._prev_grip_pos = None
        self._place_off = self.rng.normal(0.0, PLACE_XY_STD * self.noise, 2)
        self._release_dz = abs(float(self.rng.normal(0.0, RELEASE_Z_STD * self.noise)))
        self._miss = np.zeros(2)  # drawn only with corrections, so the noise-only stream is unchanged
        if self.corrections > 0 and self.rng.random() < self.corrections:
            angle = self.rng.uniform(0.0, 2 * math.pi)
            self._miss = self.rng.uniform(*CORRECTION_MISS) * np.array([math.cos(angle), math.sin(angle)])
        self._new_attempt()

    def _new_attempt(self) -> None:
        n = self.noise
        self._grasp_off = self.rng.normal(0.0, GRASP_XY_STD * n, 2)
        self._yaw_err = float(self.rng.normal(0.0, GRASP_YAW_STD * n))
        self._grasp_dz = float(np.clip(self.rng.normal(0.0, GRASP_Z_STD * n), -0.003, 0.006))
        self.attempts += 1

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    # --- one control step ------------------------------------------------------------------------------
    def act(self, joint_pos: np.ndarray, task_state: dict) -> np.ndarray:
        q = np.asarray(joint_pos, dtype=np.float64)
        if self._last is None:
            self._last = q.copy()
            self._tcp = tcp_pose(self.model, self._data, q[:5])[0]
            self._roll = float(q[4])
            self._grip = float(q[5])
        cube = np.asarray(task_state["cube_pos"], dtype=np.float64)
        target = np.asarray(task_state["target_pos"], dtype=np.float64)
        tracking = float(np.max(np.abs(q[:5] - self._last[:5])))
        goal = self._plan(q, cube, target, task_state, tracking)
        self.phase_steps += 1

        if goal is not None:
            step = _CART_STEP.get(self.phase, 0.04)
            delta = goal - self._tcp
            dist = float(np.linalg.norm(delta))
            self._tcp = goal.copy() if dist <= step else self._tcp + delta * (step / dist)
        desired = np.r_[self.ik.solve(self._tcp, roll=self._roll), self._grip]

        if self._hold > 0:
            self._hold -= 1
            desired = self._last.copy()
        elif self.noise > 0 and self.rng.random() < HESITATE_P * self.noise:
            self._hold = int(self.rng.integers(*HESITATE_STEPS))
            desired = self._last.copy()
        if self.noise > 0:
            desired[:5] += self.rng.normal(0.0, ACTION_STD * self.noise, 5)
        out = self._last + np.clip(desired - self._last, -self.max_step, self.max_step)
        out = np.clip(out, self.lower, self.upper)
        self._last = out
        return out.copy()

    def _reached(self, goal: np.ndarray, tracking: float, tol: float) -> bool:
        return bool(np.linalg.norm(goal - self._tcp) < 1e-6 and tracking < tol and self._hold == 0)

    def _plan(self, q, cube, target, ts, tracking) -> np.ndarray | None:
        """Update phase bookkeeping; return the tcp goal for this step (None = hold the tcp)."""
        p = self.phase
        if p in ("approach", "descend"):
            yaw = quat_yaw(ts["cube_quat"]) + self._yaw_err
            waist = math.atan2(cube[1], cube[0])
            self._roll = self.ik.roll_for_yaw(waist, yaw, near=self._roll)
            self._grip = OPEN
            xy = cube[:2] + self._grasp_off
            if p == "approach":
                goal = np.r_[xy, cube[2] + HOVER]
                if self._reached(goal, tracking, 0.03):
                    self._goto("descend")
            else:
                goal = np.r_[xy, max(cube[2] + GRASP_DZ + self._grasp_dz, CUBE_HALF)]
                if self._reached(goal, tracking, 0.01):
                    self._goto("close")
            return goal
        if p == "close":
            self._grip = max(CLOSED, self._grip - self.max_step[5])
            settled = self._prev_grip_pos is not None and abs(q[5] - self._prev_grip_pos) < 5e-4
            self._prev_grip_pos = float(q[5])
            if self._grip <= CLOSED and self.phase_steps >= 2 and settled:
                self._prev_grip_pos = None
                self._goto("lift")
            return None
        if p == "lift":
            goal = np.r_[self._tcp[:2], CARRY_Z]
            if self._reached(goal, tracking, 0.03):
                if ts["grasped"] and cube[2] > CUBE_HALF + 0.03:
                    self._in_hand = cube - self._tcp
                    self._goto("transport")
                else:
                    self._goto("reopen")
            return goal
        if p in ("transport", "lower", "correct"):
            if not ts["grasped"]:  # dropped it: start over from wherever it fell
                self._goto("reopen")
                return None
            missing = bool(self._miss.any())
            xy = target[:2] + self._place_off - self._in_hand[:2] + self._miss
            release_z = CUBE_HALF + RELEASE_GAP + self._release_dz - self._in_hand[2]
            if p == "transport":
                goal = np.r_[xy, CARRY_Z]
                if self._reached(goal, tracking, 0.02):
                    self._goto("lower")
            elif p == "lower":
                goal = np.r_[xy, release_z + (CORRECTION_DZ if missing else 0.0)]
                if self._reached(goal, tracking, 0.01):
                    if missing:  # off target, just above the table: now set it down on the target
                        self._miss = np.zeros(2)
                        self._goto("correct")
                    else:
                        self._goto("release")
            else:  # over the target and down together: no stop for a policy to copy and hover in
                goal = np.r_[xy, release_z]
                if self._reached(goal, tracking, 0.01):
                    self._goto("release")
            return goal
        if p == "release":
            self._grip = min(OPEN, self._grip + self.max_step[5])
            if self._grip >= OPEN and q[5] > OPEN - 0.01:
                self._goto("retreat")
            return None
        if p == "reopen":
            self._grip = min(OPEN, self._grip + self.max_step[5])
            goal = np.r_[self._tcp[:2], max(self._tcp[2], cube[2] + HOVER)]
            if self._grip >= OPEN and self._reached(goal, tracking, 0.05):
                self._new_attempt()
                self._goto("approach")
            return goal
        if p == "retreat":
            goal = np.r_[self._tcp[:2], RETREAT_Z]
            if self._reached(goal, tracking, 0.05):
                self.done = True
            return goal
        raise RuntimeError(f"unknown expert phase {p!r}")


def run_expert_episode(robot, expert: ScriptedExpert, seed: int, max_steps: int = 150) -> dict:
    """Drive `robot` with `expert` at the control rate until success, the expert finishing (plus a
    few settling steps) or `max_steps`; returns {"success", "steps"}."""
    robot.reset(seed)
    expert.reset(seed)
    n_sub = max(1, int(round(robot.control_dt / robot.physics_dt)))
    success, steps, after_done = False, 0, 0
    for steps in range(1, max_steps + 1):
        q, _, _ = robot.joint_state()
        robot.set_target(expert.act(q, robot.task_state()))
        robot.step_physics(n_sub)
        if robot.success():
            success = True
            break
        if expert.done:
            after_done += 1
            if after_done > 5:
                break
    return {"success": success, "steps": steps}
