"""ros2 launch robot_rl sim.launch.py [profile:=sim] — the simulated robot graph of a profile.

Thin on purpose: the profile (hardware/profiles/NAME.yaml) is the single source of truth for which
nodes run with which parameters; `robot-rl up NAME` starts the same graph without the launch CLI.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from robot_rl.ros.env import configure_ros_environment
from robot_rl.ros.graph import launch_entries


def profile_nodes(context):
    profile = LaunchConfiguration("profile").perform(context)
    return [Node(package="robot_rl", executable=e.executable, name=e.name, parameters=[e.parameters],
                 output="screen", emulate_tty=True) for e in launch_entries(profile)]


def generate_launch_description():
    env = [SetEnvironmentVariable(k, v) for k, v in configure_ros_environment({}).items()]
    return LaunchDescription([
        DeclareLaunchArgument("profile", default_value="sim", description="profile name or YAML path"),
        *env,
        OpaqueFunction(function=profile_nodes),
    ])
