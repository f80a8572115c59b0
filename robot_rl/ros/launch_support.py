"""What every launch/*.launch.py does: read `profile:=NAME` and start that profile's nodes for one mode.

`launch`/`launch_ros` are imported inside the function: they exist only on machines with a system
ROS 2 install (not installable from the package registries); `robot-rl up --mode` runs the same
graph elsewhere.
"""
from __future__ import annotations

from robot_rl.ros.env import configure_ros_environment
from robot_rl.ros.graph import launch_entries


def profile_launch_description(mode: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def profile_nodes(context):
        profile = LaunchConfiguration("profile").perform(context)
        return [Node(package="robot_rl", executable=e.executable, name=e.name, parameters=[e.parameters],
                     output="screen", emulate_tty=True) for e in launch_entries(profile, mode)]

    env = [SetEnvironmentVariable(k, v) for k, v in configure_ros_environment({}).items()]
    return LaunchDescription([
        DeclareLaunchArgument("profile", default_value="sim", description="profile name or YAML path"),
        *env,
        OpaqueFunction(function=profile_nodes),
    ])
