"""The package installs both ways: `pip install -e .` (this venv) and `colcon build` (ament_python)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robot_rl.config.nodes import NODE_PARAMS

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def setup_nodes() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    block = text[text.index("NODES = {"): text.index("}", text.index("NODES = {"))]
    return dict(re.findall(r'"(\w+)": "([\w.:]+)"', block))


def test_every_node_is_an_entry_point_with_params_and_main():
    nodes = setup_nodes()
    assert set(nodes) == set(NODE_PARAMS), "setup.py NODES and config/nodes.py NODE_PARAMS must list the same nodes"
    for name, target in nodes.items():
        module, func = target.split(":")
        assert module == f"robot_rl.nodes.{name}" and func == "main"
        assert (ROOT / "robot_rl" / "nodes" / f"{name}.py").is_file()
        assert shutil.which(name, path=str(VENV_BIN)), f"console script {name} not installed in the venv"


def test_package_xml_declares_runtime_dependencies():
    xml = (ROOT / "package.xml").read_text()
    assert '<package format="3">' in xml and "<build_type>ament_python</build_type>" in xml
    for dep in ["rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "python3-numpy", "python3-yaml"]:
        assert f"<exec_depend>{dep}</exec_depend>" in xml


@pytest.mark.timeout(300)
def test_colcon_build_installs_nodes_launch_and_profiles(tmp_path):
    colcon = VENV_BIN / "colcon"
    assert colcon.exists(), "colcon-common-extensions is pinned in requirements.txt"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "robot_rl").symlink_to(ROOT)
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    result = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    install = tmp_path / "install" / "robot_rl"
    for name in setup_nodes():
        assert (install / "lib" / "robot_rl" / name).is_file()
    share = install / "share" / "robot_rl"
    assert (share / "launch" / "sim.launch.py").is_file()
    assert (share / "hardware" / "profiles" / "sim.yaml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "robot_rl").is_file()
    # The installed package finds its profiles through the ament index, not the source tree.
    site = next((install / "lib").glob("python3*/site-packages"))
    probe = subprocess.run(
        [sys.executable, "-c", "from robot_rl.config import load_profile; print(load_profile('sim').source)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(install), PYTHONSAFEPATH="1"))
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str((share / "hardware" / "profiles" / "sim.yaml").resolve())
