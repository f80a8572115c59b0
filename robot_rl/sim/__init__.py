"""MuJoCo simulated robot core (plain Python, no ROS): scene, pick_place task, scripted expert.

Rendering is headless by default: MUJOCO_GL is set to "egl" unless the caller chose a backend
before mujoco was first imported.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from robot_rl.sim.expert import ScriptedExpert, run_expert_episode  # noqa: E402
from robot_rl.sim.robot import SimRobot  # noqa: E402

__all__ = ["ScriptedExpert", "SimRobot", "run_expert_episode"]
