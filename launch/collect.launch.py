"""ros2 launch robot_rl collect.launch.py [profile:=sim] — teleoperated data collection (robot, sensors, teleop, recorder).

Thin on purpose: the profile (hardware/profiles/NAME.yaml) says which nodes run in mode 'collect' and
with which parameters; `robot-rl up NAME --mode collect` starts the same graph without the launch CLI.
"""
from robot_rl.ros.launch_support import profile_launch_description


def generate_launch_description():
    return profile_launch_description(mode="collect")
