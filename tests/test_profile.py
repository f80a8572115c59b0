"""Profiles: the shipped ones load; bad ones are rejected with file, field and problem."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robot_rl.config import ConfigError, available_profiles, load_profile

SIM = Path(__file__).resolve().parents[1] / "hardware" / "profiles" / "sim.yaml"


def write_variant(tmp_path, mutate) -> Path:
    data = yaml.safe_load(SIM.read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_profile_loads():
    profiles = available_profiles()
    assert "sim" in profiles
    for name in profiles:
        profile = load_profile(name)
        assert profile.robot.joints and profile.source.endswith(f"{name}.yaml")


def test_sim_profile_contents():
    p = load_profile("sim")
    assert p.robot.joint_names[-1] == "gripper" and p.robot.gripper_joint == "gripper"
    assert {c.name for c in p.cameras} == {"front", "wrist"}
    assert all(t.rows * t.cols > 1 for t in p.tactile)
    assert p.node_params("sim_robot").render is True


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda d: d["robot"]["joints"][1].update(lower=2.0), "robot.joints[1].lower", "must be below upper"),
    (lambda d: d["robot"].update(control_rate_hz="fast"), "robot.control_rate_hz", "must be a number"),
    (lambda d: d["robot"].update(driver="ur5"), "robot.driver", "must be one of"),
    (lambda d: d["cameras"][0].update(hieght=10), "cameras[0].hieght", "did you mean 'height'"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "cameras", "duplicate camera"),
    (lambda d: d["robot"].pop("joints"), "robot.joints", "required"),
    (lambda d: d["nodes"][0].update(executable="nope_node"), "nodes[0].executable", "unknown executable"),
    (lambda d: d["nodes"][0]["params"].update(clock="warp"), "nodes[0].params.clock", "must be one of"),
    (lambda d: d.pop("sim"), "sim", "sim: section is required"),
])
def test_bad_profile_names_file_field_and_problem(tmp_path, mutate, field, problem):
    path = write_variant(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    message = str(err.value)
    assert str(path) in message and field in message and problem in message.replace("'sim:'", "sim:")
    assert "\n" not in message


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nrobot: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: invalid YAML"):
        load_profile(str(path))


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match=r"unknown profile 'nosuch'; available profiles: .*sim"):
        load_profile("nosuch")


def test_cli_bad_profile_is_one_line_exit_2(tmp_path):
    path = write_variant(tmp_path, lambda d: d["robot"].update(state_rate_hz=1.0))
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "up", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "robot.state_rate_hz" in lines[0] and str(path) in lines[0]
