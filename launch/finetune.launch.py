"""ros2 launch robot_rl finetune.launch.py [profile:=sim] — residual RL fine-tuning (policy, recorder, episode manager, learner).

Thin on purpose: the profile (hardware/profiles/NAME.yaml) says which nodes run in mode 'finetune' and
with which parameters; `robot-rl up NAME --mode finetune` starts the same graph without the launch CLI.
"""
from robot_rl.ros.launch_support import profile_launch_description


def generate_launch_description():
    return profile_launch_description(mode="finetune")
