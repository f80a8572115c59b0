"""ros2 launch robot_rl sim.launch.py [profile:=sim] — the robot and its sensors.

Thin on purpose: the profile (hardware/profiles/NAME.yaml) says which nodes run in mode 'robot' and
with which parameters; `robot-rl up NAME --mode robot` starts the same graph without the launch CLI.
"""
from robot_rl.ros.launch_support import profile_launch_description


def generate_launch_description():
    return profile_launch_description(mode="robot")
