"""Calibration files are picked up by the nodes on their next start, and the calibrate CLI works over
ROS: the sim robot node (a real process, started by the graph runner) publishes the CameraInfo of a
calibration file written before it started; with a camera delay injected into the sim, `robot-rl
calibrate time-offset` run against that graph recovers the delay within one frame period."""
import rclpy  # noqa: F401  # isort: skip  (before pyrealsense2: see robot_rl/drivers/realsense/__init__.py)

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from robot_rl.calibration.camera_file import camera_file_path, write_camera_file
from robot_rl.calibration.time_offset import load_latencies
from robot_rl.config import load_profile
from robot_rl.ros import qos, topics
from robot_rl.ros.graph import GraphRunner
from robot_rl.sim.render import pinhole

pytestmark = pytest.mark.timeout(180)
PROFILE = load_profile("sim")
K = np.array([[150.25, 0.0, 63.125], [0.0, 151.5, 64.75], [0.0, 0.0, 1.0]])
DIST = [0.0125, -0.025, 0.001, 0.0005, 0.003]
DELAY = 0.1


def test_sim_node_publishes_the_calibration_file_and_time_offsets_are_recovered(probe, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    path = write_camera_file(camera_file_path("sim", "front"), 128, 128, K, DIST, meta={"board": "test"})
    for cam in ("front", "wrist"):
        probe.watch(topics.camera_info(cam), CameraInfo, qos.LATCHED)
    runner = GraphRunner(PROFILE, out=None, overrides={"sim_robot": {"camera_delay_s": str(DELAY)}}).start()
    try:
        arrived = probe.wait_for(lambda: all(probe.latest(topics.camera_info(c)) for c in ("front", "wrist")), 90)
        assert arrived, runner.log("sim_robot")[-3000:]
        front = probe.latest(topics.camera_info("front")).msg
        assert (front.width, front.height) == (128, 128) and front.distortion_model == "plumb_bob"
        assert np.allclose(np.reshape(front.k, (3, 3)), K) and np.allclose(front.d, DIST)
        assert np.allclose(np.reshape(front.p, (3, 4))[:, :3], K)
        assert f"intrinsics from {path}" in runner.log("sim_robot")
        wrist = probe.latest(topics.camera_info("wrist")).msg  # no file: the sim's own camera model
        fx, fy, cx, cy = pinhole(72.0, 128, 128)
        assert np.allclose([wrist.k[0], wrist.k[4], wrist.k[2], wrist.k[5]], [fx, fy, cx, cy]) and not any(wrist.d)

        # the CLI as a user runs it, against the running graph
        cmd = [sys.executable, "-m", "robot_rl.cli.main", "calibrate", "time-offset", "--profile", "sim",
               "--seconds", "5"]
        result = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        print("\n" + result.stdout)
        latencies = load_latencies("sim")
        for cam in PROFILE.cameras:
            assert abs(latencies[f"camera/{cam.name}"] - DELAY) < 1.0 / cam.fps, latencies

        # hand-eye drives the arm through poses via /robot/command; this scene has no board to see
        cmd = [sys.executable, "-m", "robot_rl.cli.main", "calibrate", "handeye", "--profile", "sim", "--camera",
               "wrist", "--poses", "5", "--amplitude", "0.1"]
        result = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=120)
        print(result.stdout + result.stderr)
        assert result.returncode == 1 and result.stdout.count("board not detected") == 5
        assert "only 0 usable views, need at least 8; the board was not found in 5 images" in result.stderr
        assert "no file written" in result.stderr and not (tmp_path / "sim" / "handeye_wrist.yaml").exists()
    finally:
        assert runner.stop() == 0, runner.log("sim_robot")[-3000:]


def test_the_camera_node_reads_the_same_file(tmp_path, monkeypatch):
    """The RealSense camera node's reader accepts what the calibration tools write."""
    from robot_rl.drivers.realsense.calibration import load_calibration

    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    write_camera_file(camera_file_path("koch_real", "front"), 640, 480, np.diag([4.0, 4.0, 1.0]) @ K, DIST)
    intr = load_calibration("koch_real", "front", 640, 480)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == pytest.approx((601.0, 606.0, 252.5, 259.0))
    assert intr.distortion == pytest.approx(tuple(DIST)) and intr.distortion_model == "plumb_bob"


def test_a_calibration_for_another_resolution_stops_the_node_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    path = write_camera_file(camera_file_path("sim", "wrist"), 640, 480, K, DIST)
    runner = GraphRunner(PROFILE, out=None).start()
    try:
        deadline = time.monotonic() + 90
        while not runner.poll() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.poll() == [("sim_robot", 2)]
        assert f"{path}: width: calibrated at 640x480 but camera 'wrist' streams at 128x128" in runner.log("sim_robot")
    finally:
        runner.stop()
