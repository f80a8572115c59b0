"""The sim's scripted expert as a teleop device: unattended demonstrations in simulation.

On a gymnasium profile it runs the profile's gym.expert on the observation in /sim/task_state.
It follows the sim episode counter in /sim/task_state, so each new episode (after /robot/reset)
restarts the expert with a fresh, reproducible seed.
"""
from __future__ import annotations

import numpy as np

from robot_rl.drivers.teleop.base import DeviceError, TeleopInput


class ExpertDevice:
    name = "expert"

    def __init__(self, profile, params):
        if profile.sim is None:
            raise DeviceError(f"device 'expert' needs a simulated robot; profile {profile.name} has no sim: section")
        if profile.gym is not None:  # a gymnasium env: the profile's gym.expert ("module:function")
            from robot_rl.sim.gym_adapter import GymExpert

            if params.expert_corrections:
                raise DeviceError("expert_corrections is a MuJoCo pick-place expert option; a gymnasium "
                                  f"expert ({profile.gym.expert}) has no placement to correct")
            self.expert = GymExpert(profile, seed=params.seed, noise=params.expert_noise)
        else:
            from robot_rl.sim.expert import ScriptedExpert

            self.expert = ScriptedExpert(profile, seed=params.seed, noise=params.expert_noise,
                                         corrections=params.expert_corrections)
        self.seed = params.seed
        self.episode: int | None = None

    def start(self) -> None:
        pass

    def read(self, joint_pos: np.ndarray, task_state: dict | None) -> TeleopInput:
        if task_state is None:
            return TeleopInput()  # no privileged state yet: no motion input
        episode = task_state.get("episode")
        if episode != self.episode:
            self.episode = episode
            self.expert.reset(seed=self.seed + int(episode or 0))
        return TeleopInput(target=self.expert.act(np.asarray(joint_pos), task_state), intervening=True)

    def close(self) -> None:
        pass
