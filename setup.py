"""ament_python package: `pip install -e .` in a venv, or `colcon build` in a ROS 2 workspace."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "robot_rl"

# Nodes are ROS 2 executables (`ros2 run robot_rl <name>`) and console scripts alike.
NODES = {
    "sim_robot_node": "robot_rl.nodes.sim_robot_node:main",
    "camera_node": "robot_rl.nodes.camera_node:main",
    "tactile_node": "robot_rl.nodes.tactile_node:main",
    "robot_node": "robot_rl.nodes.robot_node:main",
    "teleop_node": "robot_rl.nodes.teleop_node:main",
    "recorder_node": "robot_rl.nodes.recorder_node:main",
    "policy_node": "robot_rl.nodes.policy_node:main",
    "episode_manager_node": "robot_rl.nodes.episode_manager_node:main",
    "learner_node": "robot_rl.nodes.learner_node:main",
}


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror a folder under share/robot_rl."""
    entries = {}
    for f in glob(f"{src}/**/*", recursive=True):
        if Path(f).is_file() and "__pycache__" not in f:
            entries.setdefault(f"share/{PACKAGE}/{Path(f).parent}", []).append(f)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["ros/fastdds.xml", "sim/assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("hardware"),
        *tree("calibration"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "robot-rl = robot_rl.cli.main:main",
            *[f"{name} = {target}" for name, target in NODES.items()],
        ]
    },
)
