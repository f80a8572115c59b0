"""Scripted experts for gymnasium environments run as the sim robot (robot.driver: gymnasium).

An expert is any callable `expert(observation) -> action` named in a profile as
`gym.expert: "module:function"`; it gets the observation exactly as the environment returns it
(a float array, or a dict of arrays for Dict spaces) and returns one value per action dimension
(profile joint order). The teleop node's `expert` device drives it, adding Gaussian noise scaled by
`expert_noise` (see robot_rl.sim.gym_adapter.GymExpert).
"""
from __future__ import annotations

import math

import numpy as np

# Reacher-v5 (gymnasium/envs/mujoco/assets/reacher.xml): two links in the plane, 0.1 m shoulder to
# elbow, 0.11 m elbow to fingertip; motors with gear 200 on joints with armature 1 and damping 1.
REACHER_L1, REACHER_L2 = 0.1, 0.11
REACHER_KP, REACHER_KD = 1.5, 0.12  # torque per rad of joint error / per rad/s (action units, [-1, 1])


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def reacher_expert(obs) -> np.ndarray:
    """Reacher-v5: closed-form inverse kinematics to the target, then a PD controller on the joints.

    Observation (10): cos q0, cos q1, sin q0, sin q1, target x, target y, q0 rate, q1 rate,
    fingertip - target (x, y). Of the two elbow solutions it takes the one nearer the current
    elbow angle (joint1 is limited to +-3 rad and must not wind through the limit).
    """
    obs = np.asarray(obs, dtype=np.float64)
    q = np.arctan2(obs[2:4], obs[0:2])
    qdot = obs[6:8]
    tx, ty = obs[4], obs[5]
    r2 = tx * tx + ty * ty
    c2 = np.clip((r2 - REACHER_L1 ** 2 - REACHER_L2 ** 2) / (2 * REACHER_L1 * REACHER_L2), -1.0, 1.0)
    best = None
    for elbow in (math.acos(c2), -math.acos(c2)):
        reach = (REACHER_L1 + REACHER_L2 * math.cos(elbow), REACHER_L2 * math.sin(elbow))
        shoulder = math.atan2(ty, tx) - math.atan2(reach[1], reach[0])
        goal = np.array([shoulder, elbow])
        err = np.array([_wrap(goal[0] - q[0]), goal[1] - q[1]])  # the elbow is limited: no wrapping
        if best is None or abs(err[1]) < abs(best[1]):
            best = err
    return np.clip(REACHER_KP * best - REACHER_KD * qdot, -1.0, 1.0)


def mountain_car_expert(obs) -> np.ndarray:
    """MountainCarContinuous-v0: push along the velocity (pump energy) until over the hill."""
    velocity = float(np.asarray(obs)[1])
    return np.array([1.0 if velocity >= 0 else -1.0])

