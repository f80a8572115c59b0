"""The sim robot graph in real processes over real DDS, checked from an independent rclpy probe.

One graph (started by the project's graph runner, like `robot-rl up sim`) serves the whole module;
each test resets the robot first.
"""
import time

import numpy as np
import pytest
import rclpy

from robot_rl.config import load_profile
from robot_rl.ros import convert, topics
from robot_rl.ros.graph import GraphRunner
from robot_rl.ros.sim_client import RobotClient
from robot_rl.sim import ScriptedExpert

pytestmark = pytest.mark.timeout(240)
PROFILE = load_profile("sim")
JOINTS = PROFILE.robot.joint_names


class SimGraph(RobotClient):
    """The graph runner's processes plus a client node on the test's own ROS domain."""

    def __init__(self, domain: int):
        self.runner = GraphRunner(PROFILE, out=None).start()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        super().__init__(PROFILE, context=self.context, name="test_probe")
        problem = self.wait_ready(timeout=60)
        assert not problem, self.failure(problem)

    def failure(self, what: str) -> str:
        return f"{what}; sim node log:\n{self.runner.log('sim_robot')[-3000:]}"

    def close(self) -> None:
        super().close()
        self.context.try_shutdown()
        assert self.runner.stop() == 0, self.failure("sim node did not exit cleanly")


@pytest.fixture(scope="module")
def sim(module_ros_domain):
    graph = SimGraph(module_ros_domain)
    yield graph
    graph.close()


def test_sensor_streams_rates_encodings_and_camera_info(sim):
    sim.reset()
    assert sim.probe.wait_count(topics.JOINT_STATES, 200, timeout=30)  # ~2 s of joint states
    js = sim.probe.stats(topics.JOINT_STATES)
    # the cadence from capture stamps (a loaded CI machine stalls the realtime sim now and then, which
    # lowers the average rate but not the median period between states)
    assert js["period_median_s"] == pytest.approx(1.0 / PROFILE.robot.state_rate_hz, rel=0.10)
    msg = sim.probe.latest(topics.JOINT_STATES).msg
    assert list(msg.name) == JOINTS and len(msg.position) == len(msg.velocity) == len(JOINTS)
    for cam in PROFILE.cameras:
        color = sim.probe.latest(topics.camera_color(cam.name)).msg
        assert color.encoding == "rgb8"
        image = convert.msg_to_image(color)
        assert image.shape == (cam.height, cam.width, 3) and image.std() > 5  # a real picture, not blank
        depth = sim.probe.latest(topics.camera_depth(cam.name)).msg
        assert depth.encoding == "16UC1" and convert.msg_to_image(depth).shape == (cam.height, cam.width)
        assert sim.probe.stats(topics.camera_color(cam.name))["period_median_s"] == pytest.approx(1.0 / cam.fps, rel=0.15)
        info = sim.probe.latest(topics.camera_info(cam.name)).msg
        assert (info.width, info.height) == (cam.width, cam.height)
        fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
        assert fx > 0 and fy > 0 and 0 < cx < cam.width and 0 < cy < cam.height
    for tac in PROFILE.tactile:
        tmsg = sim.probe.latest(topics.tactile_image(tac.name)).msg
        assert tmsg.encoding == "32FC1" and convert.msg_to_image(tmsg).shape == (tac.rows, tac.cols)
    # capture stamps never lie in the future
    for topic in [topics.JOINT_STATES, topics.camera_color("front")]:
        assert all(a.stamp <= a.received + 1e-3 for a in list(sim.probe.arrivals[topic]))


def test_command_moves_the_arm(sim):
    sim.reset()
    start = sim.joints()
    target = start.copy()
    target[0] += 0.4
    sim.stream(target, 1.5)
    assert sim.joints()[0] == pytest.approx(target[0], abs=0.05)


def test_out_of_limit_command_is_clipped_and_counted(sim):
    sim.reset()
    before = sim.diagnostics("sim_robot")
    target = sim.joints()
    target[0] = 5.0  # waist limit is 2.6
    sim.stream(target, 2.5)
    upper = PROFILE.robot.joints[0].upper
    assert sim.joints()[0] <= upper + 0.02 and sim.joints()[0] > upper - 0.2
    after = sim.diagnostics("sim_robot")
    assert int(after["position_clips"]) > int(before["position_clips"])
    assert int(after["clips.waist"]) > int(before["clips.waist"])


def test_stopped_command_stream_makes_the_robot_hold(sim):
    sim.reset()
    start = sim.joints()
    target = start.copy()
    target[0] += 2.0  # a 1 s move; the stream stops after 0.3 s
    sim.stream(target, 0.3)
    time.sleep(1.0)
    held = sim.joints()
    time.sleep(0.5)
    assert np.allclose(sim.joints()[:5], held[:5], atol=0.01)
    assert held[0] - start[0] < 1.5  # it stopped instead of finishing the move
    diag = sim.diagnostics("sim_robot")
    assert diag["holding"] == "true" and int(diag["stale_holds"]) >= 1


@pytest.mark.parametrize("names, positions, reason", [
    (["waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "grip"], [0.0] * 6, "unknown joints"),
    (JOINTS, [float("nan")] + [0.0] * 5, "non-finite"),
])
def test_bad_command_is_rejected_counted_and_robot_holds(sim, names, positions, reason):
    sim.reset()
    start = sim.joints()
    target = start.copy()
    target[0] += 2.0
    sim.stream(target, 0.2)
    before = sim.diagnostics("sim_robot")
    bad = list(positions)
    if reason == "non-finite":
        bad[1:] = list(target[1:])
    sim.send(bad, names)
    time.sleep(0.3)
    held = sim.joints()
    time.sleep(0.3)
    assert np.allclose(sim.joints()[:5], held[:5], atol=0.01)
    diag = sim.diagnostics("sim_robot")
    assert int(diag["commands_rejected"]) == int(before["commands_rejected"]) + 1
    assert reason in diag["last_reject_reason"] and diag["holding"] == "true"


def test_estop_holds_until_released(sim):
    sim.reset()
    start = sim.joints()
    assert sim.estop(True)
    target = start.copy()
    target[0] += 0.5
    sim.stream(target, 0.6)
    assert abs(sim.joints()[0] - start[0]) < 0.01
    assert sim.estop(False)
    sim.stream(target, 1.0)
    assert sim.joints()[0] == pytest.approx(target[0], abs=0.05)


def test_tactile_responds_when_the_gripper_closes_on_the_cube(sim):
    task = sim.reset()
    expert = ScriptedExpert(PROFILE, seed=1, noise=0.0)
    expert.reset(seed=1)
    names = [t.name for t in PROFILE.tactile]

    def touch() -> float:
        return min(float(convert.msg_to_image(sim.probe.latest(topics.tactile_image(n)).msg).max()) for n in names)

    assert touch() < 1e-3, "tactile must read ~0 with the gripper open in free space"
    pressed = 0.0
    end = time.monotonic() + 40
    while time.monotonic() < end and pressed <= 0.05:
        sim.send(expert.act(sim.joints(), sim.task_state() or task))
        time.sleep(1.0 / PROFILE.robot.control_rate_hz)
        pressed = touch()
    assert pressed > 0.05, "both finger pads should feel the cube once the expert grasps it"
