"""The in-process evaluation's failure breakdown: why an episode failed, from the real sim's state."""
from __future__ import annotations

import numpy as np

from robot_rl.config import load_profile
from robot_rl.policies.sim_eval import failure, outcome_summary, run_episode
from robot_rl.sim import SimRobot
from robot_rl.sim.scene import CUBE_HALF


def state(cube, target=(0.25, 0.0, 0.0), grasped=False) -> dict:
    return {"cube_pos": list(cube), "target_pos": list(target), "grasped": grasped}


def test_failures_are_told_apart_by_the_final_state():
    on_table = (0.28, 0.0, CUBE_HALF)
    assert failure(state(on_table), lifted=False) == {"outcome": "never_lifted", "miss_cm": 3.0}
    assert failure(state(on_table), lifted=True) == {"outcome": "off_target", "miss_cm": 3.0}
    assert failure(state((0.28, 0.0, 0.1)), lifted=True)["outcome"] == "held"
    assert failure(state(on_table, grasped=True), lifted=True)["outcome"] == "held"
    assert failure(state((0.6, 0.0, -0.3)), lifted=True)["outcome"] == "off_table"
    details = [{"outcome": "success"}, {"outcome": "off_target", "miss_cm": 3.0},
               {"outcome": "off_target", "miss_cm": 5.0}, {"outcome": "off_target", "miss_cm": 2.5}]
    assert outcome_summary(details) == {"outcomes": {"success": 1, "never_lifted": 0, "held": 0, "off_target": 3,
                                                     "off_table": 0},
                                        "off_target_miss_cm": {"median": 3.0, "max": 5.0}}


class HoldStill:
    """A policy that keeps every joint where it is: the cube is never picked up."""
    obs_keys = ["obs/joint_pos"]
    obs_horizon, exec_horizon = 1, 4

    def predict(self, window, seed=0):
        return np.repeat(window["obs/joint_pos"][-1:], 4, axis=0)


def test_an_episode_that_never_picks_the_cube_up_says_so():
    profile = load_profile("sim")
    with SimRobot(profile, seed=3, render=True) as robot:
        result = run_episode(HoldStill(), robot, profile, seed=3, max_steps=10)
    assert result["success"] is False and result["outcome"] == "never_lifted"
    assert result["miss_cm"] >= 8.0  # layouts keep the cube >= 8 cm from the target
