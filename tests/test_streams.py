"""subscribe_observations: what the recorder and the policy node both receive, with calibrated
per-stream latencies applied to the capture stamps."""
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import Image, JointState

from robot_rl.config import load_profile
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.streams import subscribe_observations

PROFILE = load_profile("sim")


class Sink:
    def __init__(self):
        self.got = {}

    def add_joint_state(self, stamp, position, velocity):
        self.got["joint_state"] = (stamp, position)

    def add_image(self, kind, camera, stamp, image):
        self.got[f"{kind}/{camera}"] = (stamp, image)

    def add_tactile(self, sensor, stamp, image):
        self.got[f"tactile/{sensor}"] = (stamp, image)


def test_latency_corrections_are_applied_to_stamps(probe, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "time_offsets.yaml").write_text(yaml.safe_dump(
        {"latency_s": {"camera/front": 0.05, "tactile/left_finger": 0.002}}))
    sink = Sink()
    node = probe.node
    fix = subscribe_observations(node, PROFILE, sink)
    assert fix["color/front"] == pytest.approx(-0.05) and fix["color/wrist"] == 0.0
    pubs = {
        "joint": node.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR),
        "front": node.create_publisher(Image, topics.camera_color("front"), qos.SENSOR),
        "left": node.create_publisher(Image, topics.tactile_image("left_finger"), qos.SENSOR),
    }
    for pub in pubs.values():
        assert probe.wait_for(lambda p=pub: p.get_subscription_count() > 0, timeout=10)
    image = np.full((128, 128, 3), 7, np.uint8)

    def publish_all():
        pubs["joint"].publish(convert.joint_state_msg(PROFILE.robot.joint_names, np.arange(6.0), stamp=100.0))
        pubs["front"].publish(convert.image_to_msg(image, "rgb8", 100.0))
        pubs["left"].publish(convert.image_to_msg(np.ones((4, 4), np.float32), "32FC1", 100.0))
        return {"joint_state", "color/front", "tactile/left_finger"} <= set(sink.got)

    assert probe.wait_for(publish_all, timeout=10)
    assert sink.got["joint_state"][0] == pytest.approx(100.0)
    assert sink.got["color/front"][0] == pytest.approx(99.95) and sink.got["color/front"][1].mean() == 7
    assert sink.got["tactile/left_finger"][0] == pytest.approx(99.998)
