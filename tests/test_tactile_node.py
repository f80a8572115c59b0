"""The tactile node as a real process (graph runner) fed by the pty emulator at 1 kHz, checked from an
independent rclpy probe: calibrated 32FC1 images with capture stamps, and diagnostics with the link counters."""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from robot_rl.config import load_profile
from robot_rl.drivers.tactile import Calibration
from robot_rl.drivers.tactile.emulator import TactileEmulator
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner
from test_tactile_serial import COLS, RATE, ROWS, write_profile

pytestmark = pytest.mark.timeout(180)
TOPIC = topics.tactile_image("left")
SCALE = 0.01  # N per count


def tactile_status(probe) -> dict[str, str] | None:
    """Key/values of the newest /diagnostics status from the tactile node."""
    for arrival in reversed(list(probe.arrivals[topics.DIAGNOSTICS])):
        for status in arrival.msg.status:
            if status.name.endswith("tactile_left"):
                level = status.level[0] if isinstance(status.level, bytes) else int(status.level)  # byte field
                return {"_level": level, "_message": status.message, **{kv.key: kv.value for kv in status.values}}
    return None


def wait_status(probe, predicate, timeout=30.0) -> dict[str, str]:
    last = {}

    def check():
        nonlocal last
        last = tactile_status(probe) or {}
        return bool(last) and predicate(last)

    assert probe.wait_for(check, timeout), f"diagnostics never matched; last: {last}"
    return last


def test_node_publishes_calibrated_stamped_images_and_diagnostics(tmp_path, monkeypatch, probe):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path / "cal"))
    with TactileEmulator(ROWS, COLS, RATE) as emu:
        emu.pressure[1, 2], emu.pressure[3, 5] = 500, 1200  # two pressed taxels
        write_profile(tmp_path / "bench.yaml", emu.path)
        profile = load_profile(str(tmp_path / "bench.yaml"))
        Calibration(emu.baseline, SCALE, units="N").save(Calibration.path_for(profile.name, "left"), "left")
        expected = (emu.pressure * SCALE).astype(np.float32)

        probe.watch(TOPIC, Image, qos.sensor_subscription(RATE))
        probe.watch(topics.DIAGNOSTICS, DiagnosticArray, qos.RELIABLE)
        runner = GraphRunner(profile, out=None).start()
        try:
            assert probe.wait_count(TOPIC, 2000, timeout=60), runner.log("tactile_left")[-3000:]
            arrivals = list(probe.arrivals[TOPIC])[-1500:]
            msg = arrivals[-1].msg
            assert msg.encoding == "32FC1" and (msg.height, msg.width) == (ROWS, COLS)
            assert msg.header.frame_id == "left_pad"
            np.testing.assert_allclose(convert.msg_to_image(msg), expected, atol=1e-4)
            # stamps: capture time on the host clock -- never after receipt, close to it, 1 ms apart
            stamps = np.array([a.stamp for a in arrivals])
            received = np.array([a.received for a in arrivals])
            assert np.all(stamps <= received + 1e-3) and np.all(np.diff(stamps) > 0)
            assert np.median(received - stamps) < 0.05, np.percentile(received - stamps, [50, 99])
            assert np.median(np.diff(stamps)) == pytest.approx(1e-3, rel=0.05)

            status = wait_status(probe, lambda s: s["port_state"] == "streaming" and int(s["frames"]) > 500)
            for key in ("rate_hz", "frames", "published", "bad_frames", "crc_errors", "truncated", "garbage_bytes",
                        "seq_gaps", "frames_lost", "clock_offset_s", "latency_ms", "port", "reconnects", "units"):
                assert key in status, key
            assert status["_level"] == 0 and status["units"] == "N" and status["port"] == emu.path
            assert float(status["rate_hz"]) > 0 and abs(float(status["clock_offset_s"])) > 0
            assert int(status["frames_lost"]) == 0 and int(status["bad_frames"]) == 0  # every frame got through

            emu.flip_bits(5)
            emu.inject_garbage(100)
            wait_status(probe, lambda s: int(s["crc_errors"]) == 5 and int(s["frames_lost"]) == 5)

            emu.disconnect()
            lost = wait_status(probe, lambda s: s["port_state"] in ("lost", "missing"))
            assert lost["_level"] == 2 and emu.path in lost["_message"]
            emu.connect()
            back = wait_status(probe, lambda s: s["port_state"] == "streaming" and s["reconnects"] == "1")
            assert back["_level"] == 0
            count = probe.counts[TOPIC]
            assert probe.wait_count(TOPIC, count + 200, timeout=30)
            np.testing.assert_allclose(convert.msg_to_image(probe.latest(TOPIC).msg), expected, atol=1e-4)
        finally:
            code = runner.stop()
        assert code == 0, runner.log("tactile_left")[-3000:]
        log = runner.log("tactile_left")
        assert "lost tactile port" in log and "Traceback" not in log


def test_node_rejects_an_unknown_sensor_with_one_clear_line(tmp_path, ros_domain):
    write_profile(tmp_path / "bench.yaml", "/dev/null")
    profile = load_profile(str(tmp_path / "bench.yaml"))
    runner = GraphRunner(profile, out=None, overrides={"tactile_left": {"sensor": "palm"}}).start()
    deadline = time.monotonic() + 60
    while not runner.poll() and time.monotonic() < deadline:
        time.sleep(0.1)
    runner.stop()
    assert runner.nodes[0].process.returncode == 2
    log = runner.log("tactile_left")
    assert "no tactile sensor 'palm' in the profile (sensors: left)" in log and "Traceback" not in log
