"""camera_node as a real process: a recording made with `rs.recorder` from a software device plays
through the same `rs.pipeline` path as a live camera; an rclpy probe checks what arrives. A serial
that is not connected keeps the node alive and retrying, saying so in its log and diagnostics."""
import rclpy  # noqa: F401  # isort: skip  (before pyrealsense2: see robot_rl/drivers/realsense/__init__.py)

import time

import numpy as np
import pyrealsense2 as rs
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from robot_rl.config import load_profile
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner
from test_realsense_driver import T0_MS, SoftwareCamera

pytestmark = pytest.mark.timeout(180)
W, H, FPS, N_FRAMES = 160, 120, 30, 30

PROFILE = """\
name: camtest
robot:
  driver: mujoco_sim
  control_rate_hz: 10.0
  state_rate_hz: 100.0
  joints:
    - {{name: waist, lower: -2.6, upper: 2.6, max_velocity: 2.0}}
cameras:
  - {{name: front, width: {w}, height: {h}, fps: {fps}, depth: true, serial: "{serial}"}}
sim: {{task: pick_place}}
nodes:
  - name: cam_front
    executable: camera_node
    params: {{camera: front, playback_file: "{playback}", retry_max_s: 0.5}}
"""


def write_profile(tmp_path, serial="", playback=""):
    path = tmp_path / "camtest.yaml"
    path.write_text(PROFILE.format(w=W, h=H, fps=FPS, serial=serial, playback=playback))
    return load_profile(str(path))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """30 color + depth frames recorded at their real pace (playback is real time)."""
    path = tmp_path_factory.mktemp("rec") / "front.db3"
    cam = SoftwareCamera(W, H, FPS)
    recorder = rs.recorder(str(path), cam.device)
    cam.start()
    start = time.monotonic()
    for k in range(N_FRAMES):
        time.sleep(max(0.0, start + k / FPS - time.monotonic()))
        cam.push(k)
        cam.sink.try_wait_for_frames(100)
    cam.stop()
    recorder.pause()
    del recorder  # closes the file
    assert path.stat().st_size > 0
    return path, cam


@pytest.fixture
def isolated_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path / "calibration"))  # device intrinsics only


def recorded_index(stamp: float) -> int:
    k = round((stamp * 1000.0 - T0_MS) * FPS / 1000.0)
    assert 0 <= k < N_FRAMES and stamp == pytest.approx((T0_MS + k * 1000.0 / FPS) / 1000.0, abs=1e-6), \
        f"stamp {stamp} is not a recorded capture time"
    return k


def watch_camera(probe):
    probe.watch(topics.camera_color("front"), Image, qos.sensor_subscription(FPS, 0.5))
    probe.watch(topics.camera_depth("front"), Image, qos.sensor_subscription(FPS, 0.5))
    probe.watch(topics.camera_info("front"), CameraInfo, qos.LATCHED)
    probe.watch(topics.DIAGNOSTICS, DiagnosticArray, qos.RELIABLE)


def node_status(probe):
    for arrival in reversed(list(probe.arrivals[topics.DIAGNOSTICS])):
        for status in arrival.msg.status:
            if status.name.endswith("cam_front"):
                return status
    return None


def test_playback_publishes_recorded_images_depth_info_and_stamps(tmp_path, probe, recording, isolated_calibration):
    path, cam = recording
    runner = GraphRunner(write_profile(tmp_path, playback=str(path)), out=None).start()
    try:
        color_t, depth_t = topics.camera_color("front"), topics.camera_depth("front")
        watch_camera(probe)
        ok = probe.wait_for(lambda: probe.counts[color_t] >= 20 and probe.counts[depth_t] >= 10
                            and probe.counts[topics.camera_info("front")] >= 1, timeout=90)
        assert ok, f"too few messages {dict(probe.counts)}; node log:\n{runner.log('cam_front')[-3000:]}"
        for arrival in list(probe.arrivals[color_t]):
            msg = arrival.msg
            assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == ("rgb8", W, H, "front_optical_frame")
            assert np.array_equal(convert.msg_to_image(msg), cam.color_image(recorded_index(arrival.stamp)))
        for arrival in list(probe.arrivals[depth_t]):
            assert (arrival.msg.encoding, arrival.msg.width, arrival.msg.height) == ("16UC1", W, H)
            depth = convert.msg_to_image(arrival.msg)
            valid = depth[depth > 0]
            assert valid.size > 0.3 * depth.size and np.all(valid == cam.depth_mm(recorded_index(arrival.stamp)))
        info = probe.latest(topics.camera_info("front")).msg
        c = cam.color_intr
        assert (info.width, info.height, info.header.frame_id) == (W, H, "front_optical_frame")
        assert list(info.k) == pytest.approx([c.fx, 0, c.ppx, 0, c.fy, c.ppy, 0, 0, 1], abs=1e-4)
        assert list(info.d) == pytest.approx(list(c.coeffs), abs=1e-6)
        assert probe.wait_for(lambda: (s := node_status(probe)) is not None
                              and dict((v.key, v.value) for v in s.values).get("state") == "streaming", timeout=20)
        status = node_status(probe)
        assert status.level == DiagnosticStatus.OK and "fps" in status.message
    finally:
        assert runner.stop() == 0, runner.log("cam_front")[-3000:]


def test_missing_serial_keeps_the_node_alive_and_retrying(tmp_path, probe, isolated_calibration):
    serial = "918273645546"
    runner = GraphRunner(write_profile(tmp_path, serial=serial), out=None).start()
    try:
        watch_camera(probe)

        def retrying():
            values = dict((v.key, v.value) for v in s.values) if (s := node_status(probe)) else {}
            return int(values.get("retries", 0)) >= 3

        assert probe.wait_for(retrying, timeout=60), f"no retries reported; log:\n{runner.log('cam_front')[-3000:]}"
        status = node_status(probe)
        assert status.level == DiagnosticStatus.ERROR and serial in status.message
        assert "connected devices: none" in status.message
        assert runner.poll() == [], "the camera node exited instead of retrying"
        log = runner.log("cam_front")
        assert f"RealSense with serial '{serial}' is not connected" in log and "retrying in" in log
        assert probe.counts[topics.camera_color("front")] == 0
    finally:
        assert runner.stop() == 0, runner.log("cam_front")[-3000:]
