"""launch/*.launch.py build the profile's nodes.

`launch` and `launch_ros` cannot be installed here (not on the package registries), so this test
substitutes minimal stand-ins for their classes and checks what the launch file asks them to start.
On a machine with ROS 2 installed, `ros2 launch robot_rl sim.launch.py` uses the real ones.
"""
import importlib.util
import sys
import types

import pytest
from pathlib import Path

from robot_rl.config import load_profile

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def stub_launch_modules(monkeypatch, profile_value: str):
    class LaunchConfiguration(Recorder):
        def perform(self, context):
            return profile_value

    modules = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda items: list(items)),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=Recorder, OpaqueFunction=Recorder,
                                                SetEnvironmentVariable=Recorder),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros.actions": types.SimpleNamespace(Node=Recorder),
        "launch_ros": types.SimpleNamespace(),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def load_launch_file(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("launch_file, mode", [
    ("sim.launch.py", "robot"), ("collect.launch.py", "collect"),
    ("deploy.launch.py", "deploy"), ("finetune.launch.py", "finetune"),
])
def test_launch_files_start_the_profile_nodes_of_their_mode(monkeypatch, launch_file, mode):
    stub_launch_modules(monkeypatch, "sim")
    module = load_launch_file(launch_file)
    description = module.generate_launch_description()
    arg = next(a for a in description if isinstance(a, Recorder) and a.args and a.args[0] == "profile")
    assert arg.kwargs["default_value"] == "sim"
    env = {a.args[0]: a.args[1] for a in description if a.args and a.args[0] == "FASTDDS_DEFAULT_PROFILES_FILE"}
    assert env and Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    opaque = next(a for a in description if "function" in a.kwargs)
    nodes = opaque.kwargs["function"](context=None)
    profile = load_profile("sim")
    expected = [(s.executable, s.name) for s in profile.nodes_for(mode)]
    assert [(n.kwargs["executable"], n.kwargs["name"]) for n in nodes] == expected
    assert all(n.kwargs["package"] == "robot_rl" and n.kwargs["parameters"] == [{"profile": profile.source}]
               for n in nodes)
