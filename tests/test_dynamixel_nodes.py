"""robot_node (and teleop_node with the leader arm) as real processes against emulated servo chains.

The emulators run in this test process on ptys; the nodes open them through the real
dynamixel_sdk path, found via a symlink like the udev names under /dev/robot_rl/. An independent
rclpy client checks what arrives over DDS; the emulators show what the servos were told.
"""
import os
import time

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from robot_rl.config import load_profile
from robot_rl.drivers.dynamixel.emulator import ServoChainEmulator
from robot_rl.drivers.dynamixel.mapping import JointMap
from robot_rl.ros import convert, topics
from robot_rl.ros.graph import GraphRunner
from robot_rl.ros.sim_client import RobotClient
from dynamixel_arm import IDS, JOINTS

pytestmark = pytest.mark.timeout(180)
FOLLOWER = [
    {"joint": "waist", "id": 1}, {"joint": "shoulder", "id": 2, "direction": -1, "offset": 0.2},
    {"joint": "elbow", "id": 3, "offset": -0.3}, {"joint": "wrist_pitch", "id": 4, "direction": -1},
    {"joint": "wrist_roll", "id": 5}, {"joint": "gripper", "id": 6, "servo_range": [-0.2, 1.0]},
]
LEADER = [  # the leader's servos are mounted differently: its own directions/offsets/trigger range
    {"joint": "waist", "id": 1, "direction": -1, "offset": 0.1}, {"joint": "shoulder", "id": 2},
    {"joint": "elbow", "id": 3, "direction": -1}, {"joint": "wrist_pitch", "id": 4, "offset": 0.3},
    {"joint": "wrist_roll", "id": 5}, {"joint": "gripper", "id": 6, "servo_range": [0.5, -0.4]},
]


def write_profile(path, follower_port, leader_port=None, teleop=False):
    data = {
        "name": "dxl_node_test",
        "robot": {"driver": "dynamixel", "control_rate_hz": 20.0, "state_rate_hz": 100.0,
                  "gripper_joint": "gripper", "joints": JOINTS},
        "safety": {"command_timeout_periods": 4},
        "follower": {"port": str(follower_port), "baud": 1_000_000, "servos": FOLLOWER},
        "nodes": [{"name": "robot", "executable": "robot_node", "params": {"retry_max_s": 1.0}}],
    }
    if leader_port is not None:
        data["leader"] = {"port": str(leader_port), "baud": 1_000_000, "servos": LEADER}
    if teleop:
        data["nodes"].append({"name": "teleop", "executable": "teleop_node",
                              "params": {"device": "leader_arm", "drive_robot": True}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_profile(str(path))


class Graph(RobotClient):
    def __init__(self, profile, domain):
        self.runner = GraphRunner(profile, out=None).start()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        super().__init__(profile, context=self.context, name="dxl_test_client")
        self.follower_map = JointMap(profile.follower, profile.robot)

    def failure(self, what):
        return f"{what}; node logs:\n" + "\n".join(self.runner.log(n.name)[-2500:] for n in self.runner.nodes)

    def wait_diag(self, predicate, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                diag = self.diagnostics("robot", after=time.time() - 0.1, timeout=3.0)
            except TimeoutError:
                continue
            if predicate(diag):
                return diag
        raise AssertionError(self.failure("diagnostics condition not met"))

    def servo_joints(self, emu):
        return self.follower_map.to_joint([emu.position(i) for i in IDS])

    def close(self):
        super().close()
        self.context.try_shutdown()
        assert self.runner.stop() == 0, self.failure("a node did not exit cleanly")


START_TICKS = {1: 1700, 2: 2300, 3: 2100, 4: 1900, 5: 2048, 6: 2300}


@pytest.fixture(scope="module")
def follower(module_ros_domain, tmp_path_factory):
    """robot_node started before its port exists (like an unplugged adapter); then the port appears."""
    tmp = tmp_path_factory.mktemp("dxl")
    link = tmp / "follower"  # what udev would create as /dev/robot_rl/follower
    profile = write_profile(tmp / "profile.yaml", link)
    emu = ServoChainEmulator(IDS, positions=START_TICKS).start()
    for i in IDS:
        emu.set_goal_register(i, 3600 if i != 6 else 2000)  # stale goals: enabling torque must not go there
    graph = Graph(profile, module_ros_domain)
    try:
        graph.startup_error = graph.wait_diag(lambda d: str(link) in d.get("last_error", ""))["last_error"]
        os.symlink(emu.port, link)
        problem = graph.wait_ready(timeout=60)
        assert not problem, graph.failure(problem)
        time.sleep(0.5)
        graph.start_ticks = {i: emu.position(i) for i in IDS}
        graph.emu = emu
        yield graph
    finally:
        graph.close()
        emu.close()


def test_missing_port_is_reported_with_what_to_check_then_connects(follower):
    assert "does not exist" in follower.startup_error and "udev" in follower.startup_error
    diag = follower.wait_diag(lambda d: d["connected"] == "true")
    assert diag["connects"] == "1" and diag["port"].endswith("follower")
    assert follower.runner.poll() == []  # retried with back-off instead of exiting


def test_joint_states_at_the_state_rate(follower):
    """Rate from capture stamps, over a deep queue so a busy test machine cannot drop samples on our side."""
    stamps, names = [], []

    def on_state(msg):
        stamps.append(convert.from_time(msg.header.stamp))
        names[:] = [list(msg.name), len(msg.velocity), len(msg.effort)]

    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=500, reliability=ReliabilityPolicy.BEST_EFFORT)
    sub = follower.probe.node.create_subscription(JointState, topics.JOINT_STATES, on_state, deep)
    try:
        assert follower.probe.wait_for(lambda: len(stamps) >= 10, 10)
        first = len(stamps)
        follower.probe.wait_for(lambda: len(stamps) >= first + 300, 20)
        window = np.array(stamps[first:])
    finally:
        follower.probe.node.destroy_subscription(sub)
    rate = (len(window) - 1) / (window[-1] - window[0])
    diag = follower.diagnostics("robot")
    assert rate == pytest.approx(100.0, rel=0.10), (rate, len(window), diag["cycles"], diag["overruns"])
    assert names == [[j["name"] for j in JOINTS], 6, 6]
    assert all(a.stamp <= a.received + 1e-3 for a in follower.probe.arrivals[topics.JOINT_STATES])


def test_no_jump_on_start_then_far_command_at_the_velocity_limit(follower):
    emu = follower.emu
    assert all(abs(follower.start_ticks[i] - START_TICKS[i]) <= 1 for i in IDS)  # torque on, arm stayed put
    assert all(emu.torque(i) for i in IDS)
    start = follower.joints()
    target = start.copy()
    target[0] = start[0] + 1.5  # 1.5 s at waist's 1 rad/s
    follower.probe.clear(topics.JOINT_STATES)
    follower.stream(target, 2.2)
    arrivals = list(follower.probe.arrivals[topics.JOINT_STATES])
    t = np.array([a.stamp for a in arrivals])
    q = np.array([a.msg.position[0] for a in arrivals])
    assert q[-1] == pytest.approx(target[0], abs=0.03)
    moving = (q > start[0] + 0.2) & (q < target[0] - 0.2)
    speed = (q[moving][-1] - q[moving][0]) / (t[moving][-1] - t[moving][0])
    assert 0.8 <= speed <= 1.1, speed
    assert np.max(np.diff(q)) < 0.1  # no jump between consecutive states


def test_command_moves_the_emulated_servos(follower):
    target = follower.joints() + np.array([-0.3, 0.3, -0.2, 0.4, 0.5, 0.0])
    target[5] = 0.01
    follower.stream(target, 1.5)
    goals = [follower.emu.goal(i) for i in IDS]
    assert goals == list(follower.follower_map.to_ticks(target))
    assert follower.servo_joints(follower.emu) == pytest.approx(target, abs=0.01)
    assert follower.joints() == pytest.approx(target, abs=0.01)


def test_out_of_limit_command_is_clipped(follower):
    before = follower.diagnostics("robot")
    target = follower.joints()
    target[3] = 3.0  # wrist_pitch upper limit 1.5
    follower.stream(target, 1.5)
    assert follower.emu.goal(4) == follower.follower_map.to_ticks([0, 0, 0, 1.5, 0, 0])[3]
    assert follower.joints()[3] == pytest.approx(1.5, abs=0.01)
    after = follower.diagnostics("robot")
    assert int(after["clips.wrist_pitch"]) > int(before["clips.wrist_pitch"])


def test_reset_moves_home_slowly(follower):
    follower.send(follower.joints())
    started = time.monotonic()
    follower.reset()
    took = time.monotonic() - started
    home = np.array([j.get("home", 0.0) for j in JOINTS])
    assert follower.servo_joints(follower.emu) == pytest.approx(home, abs=0.02)
    assert took > 0.5  # a slow move, not a jump


def test_servo_that_stops_answering_holds_and_is_named(follower):
    emu = follower.emu
    before = follower.wait_diag(lambda d: d["missing_ids"] == "")
    target = follower.joints() + np.array([0.8, 0.5, 0, 0, 0, 0])
    follower.stream(target, 0.3)
    emu.set_answering(3, False)
    follower.stream(target, 0.4)
    diag = follower.wait_diag(lambda d: d["missing_ids"] == "3")
    assert int(diag["servo_losses"]) > int(before["servo_losses"])
    assert diag["missing_joints"] == "elbow" and diag["holding"] == "true"
    goals = [emu.goal(i) for i in IDS]
    follower.stream(target, 0.5)
    assert [emu.goal(i) for i in IDS] == goals  # holds while id 3 is silent
    assert abs(emu.position(1) - goals[0]) < 20
    assert "id 3 (elbow)" in follower.diagnostics("robot")["last_reject_reason"]
    emu.set_answering(3, True)
    diag = follower.wait_diag(lambda d: d["missing_ids"] == "")
    assert int(diag["recoveries"]) > int(before["recoveries"]) and all(emu.torque(i) for i in IDS)


def test_leader_arm_teleop_drives_the_follower(ros_domain, tmp_path):
    """Leader (torque off, moved by the test) -> teleop_node -> /robot/command -> robot_node -> follower."""
    with ServoChainEmulator(IDS) as follower_emu, ServoChainEmulator(IDS, model=1200) as leader_emu:
        profile = write_profile(tmp_path / "profile.yaml", follower_emu.port, leader_emu.port, teleop=True)
        leader_map = JointMap(profile.leader, profile.robot, "leader")
        graph = Graph(profile, ros_domain)
        try:
            assert graph.probe.wait_count(topics.JOINT_STATES, 5, 60), graph.failure("no joint states")
            for pose in ([0.6, -0.4, 0.5, 0.3, -0.8, 0.03], [-0.3, 0.2, -0.4, -0.5, 0.6, 0.01]):
                for servo_id, tick in zip(IDS, leader_map.to_ticks(pose)):
                    leader_emu.set_position(servo_id, tick)  # a human moves the limp leader
                end = time.monotonic() + 20
                while time.monotonic() < end and np.max(np.abs(graph.servo_joints(follower_emu) - pose)) > 0.02:
                    time.sleep(0.1)
                assert graph.servo_joints(follower_emu) == pytest.approx(pose, abs=0.02), graph.failure("no follow")
            assert not any(leader_emu.torque(i) for i in IDS)  # the leader stays limp
        finally:
            graph.close()
        assert not any(follower_emu.torque(i) for i in IDS)  # robot_node disabled torque on exit
