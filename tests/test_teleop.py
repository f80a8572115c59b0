"""Teleop: device key/axis mappings, and the expert device driving the sim through the ROS graph."""
import json
import time
import types

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String

from robot_rl.config import load_profile
from robot_rl.drivers.teleop.base import DISCARD, START, STOP, SUCCESS, DeviceError
from robot_rl.drivers.teleop.keyboard import KeyMapper
from robot_rl.drivers.teleop.registry import make_device
from robot_rl.drivers.teleop.spacemouse import SpaceMouseDevice
from robot_rl.ros import qos, topics
from robot_rl.ros.graph import GraphRunner
from waiting import wait_until

PROFILE = load_profile("sim")
HOME = np.array([j.home for j in PROFILE.robot.joints])


def test_keyboard_episode_keys_and_jogging():
    keys = KeyMapper(PROFILE, jog_step=0.05)
    assert keys.apply([" "], HOME).events == [START]
    out = keys.apply(["2", "w", "w", "\x1b[B"], HOME)  # select shoulder, +2 steps, -1 step (arrow down)
    assert out.target[1] == pytest.approx(HOME[1] + 0.05) and out.intervening
    assert keys.apply(["c"], HOME).target[-1] == PROFILE.robot.joints[-1].lower
    assert keys.apply(["y"], HOME).events == [SUCCESS] and not keys.recording
    assert keys.apply([" ", " "], HOME).events == [START, STOP]
    assert keys.apply(["d"], HOME).events == [DISCARD]
    many = keys.apply(["1"] + ["w"] * 500, HOME)  # jogging stops at the joint limit
    assert many.target[0] == PROFILE.robot.joints[0].upper


def test_spacemouse_axes_jog_joints_and_buttons_toggle():
    device = SpaceMouseDevice(PROFILE, types.SimpleNamespace(jog_step=0.1))
    out = device.apply(np.array([1.0, 0, 0, 0, 0, -0.5]), (0, 0), HOME)
    assert out.target[0] == pytest.approx(HOME[0] + 0.1) and out.intervening
    assert out.target[4] == pytest.approx(HOME[4])  # only 5 arm joints: the 6th axis has no joint
    assert device.apply(np.zeros(6), (1, 0), HOME).events == [START]
    assert device.apply(np.zeros(6), (1, 0), HOME).events == []  # held button: no repeat
    assert device.apply(np.zeros(6), (0, 1), HOME).target[-1] == PROFILE.robot.joints[-1].lower


def test_unknown_device_and_expert_without_sim_are_clear_errors():
    with pytest.raises(DeviceError, match="unknown teleop device 'joystick'"):
        make_device("joystick", PROFILE, None)
    no_sim = types.SimpleNamespace(sim=None, name="real")
    with pytest.raises(DeviceError, match="needs a simulated robot"):
        make_device("expert", no_sim, types.SimpleNamespace(seed=0, expert_noise=1.0))
    gym = load_profile("gym_reacher")  # placement corrections belong to the pick-place expert
    with pytest.raises(DeviceError, match="expert_corrections"):
        make_device("expert", gym, types.SimpleNamespace(seed=0, expert_noise=1.0, expert_corrections=0.5))


@pytest.mark.timeout(180)
def test_expert_teleop_drives_the_sim_to_success_through_ros(probe):
    probe.watch(topics.TELEOP_COMMAND, JointState, qos.RELIABLE)
    probe.watch(topics.TELEOP_INTERVENING, Bool, qos.RELIABLE)
    probe.watch(topics.SIM_TASK_STATE, String, qos.RELIABLE)
    runner = GraphRunner(PROFILE, mode="collect", only=["sim_robot", "teleop"], out=None).start()
    try:
        def succeeded():
            latest = probe.latest(topics.SIM_TASK_STATE)
            return latest is not None and json.loads(latest.msg.data)["success"]

        assert probe.wait_for(succeeded, timeout=120), runner.log("teleop")
        # the teleop node keeps publishing; the probe may have matched it late (discovery), so wait
        assert probe.wait_for(lambda: probe.counts[topics.TELEOP_COMMAND] > 10, timeout=30)
        assert probe.latest(topics.TELEOP_INTERVENING).msg.data is True
        assert list(probe.latest(topics.TELEOP_COMMAND).msg.name) == PROFILE.robot.joint_names
    finally:
        assert runner.stop() == 0


def test_status_line_shows_recording_episode_rate_and_health():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from robot_rl.nodes.teleop_node import StatusLine

    line = StatusLine("keyboard")
    assert "no recorder" in line.text()
    values = {"recording": "true", "episodes": "7", "episode_seconds": "3.2", "episode_rate_hz": "9.9",
              "episode_health": "ok"}
    line.on_diagnostics(DiagnosticArray(status=[DiagnosticStatus(
        name="/recorder", values=[KeyValue(key=k, value=v) for k, v in values.items()])]))
    assert all(part in line.text() for part in ["REC", "episode 7", "3.2 s", "9.9 Hz", "health ok"])
    line.recorder["recording"] = "false"
    line.last_event = "commit"
    assert "idle" in line.text() and "last: commit" in line.text()


@pytest.mark.timeout(120)
def test_missing_teleop_device_is_retried_not_a_crash_loop(probe, tmp_path):
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray

    data = yaml.safe_load(open(PROFILE.source))
    data["leader"] = {"port": "/dev/robot_rl_no_such_leader", "servos": [
        {"joint": j.name, "id": i + 1} for i, j in enumerate(PROFILE.robot.joints)]}
    data["nodes"] = [{"name": "teleop", "executable": "teleop_node", "params": {"device": "leader_arm"}}]
    path = tmp_path / "leader.yaml"
    path.write_text(yaml.safe_dump(data))
    probe.watch(topics.DIAGNOSTICS, DiagnosticArray, qos.RELIABLE)

    def complains():
        latest = probe.latest(topics.DIAGNOSTICS)
        return latest is not None and any("no_such_leader" in s.message for s in latest.msg.status)

    runner = GraphRunner(load_profile(str(path)), out=None).start()
    try:
        assert probe.wait_for(complains, timeout=60), runner.log("teleop")
        assert not runner.poll(), "the teleop node must keep retrying, not exit"
    finally:
        runner.stop()


@pytest.mark.timeout(180)
def test_an_expert_teleop_that_missed_the_start_event_still_acts(probe, tmp_path):
    """The sim expert waits for the recorder's start before it moves. A teleop node that comes up (or
    matches) after that event - a loaded machine; CI once saw a whole episode without its help -
    learns that the recorder is recording from the latched /recorder/recording."""
    import threading

    from std_srvs.srv import Trigger

    from robot_rl.ros import convert

    probe.watch(topics.TELEOP_INTERVENING, Bool, qos.RELIABLE)
    store = str(tmp_path / "demos.zarr")
    graph = GraphRunner(PROFILE, mode="collect", only=["sim_robot", "recorder"], out=None,
                        overrides={"recorder": {"store": store}}).start()
    operator = None
    holding = threading.Event()
    pub = probe.node.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND)

    def hold():  # a command stream, so that the recorder (teleop mode, on a timer) may start
        while not holding.wait(1.0 / 30):
            pub.publish(convert.joint_state_msg(PROFILE.robot.joint_names, list(HOME), stamp=time.time()))

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        start = probe.node.create_client(Trigger, topics.RECORDER_START)

        answers = []

        def started() -> bool:  # refused until the sim's streams and the command stream are fresh
            if start.service_is_ready():
                future = start.call_async(Trigger.Request())
                if wait_until(future.done, timeout=5):
                    answers.append(future.result())
            return bool(answers) and answers[-1].success

        assert wait_until(started, timeout=60, interval=0.5), ([a.message for a in answers[-3:]], graph.log("recorder"))
        holding.set()
        holder.join()
        operator = GraphRunner(PROFILE, mode="collect", only=["teleop"], out=None).start()

        def acting() -> bool:
            latest = probe.latest(topics.TELEOP_INTERVENING)
            return latest is not None and latest.msg.data is True

        assert probe.wait_for(acting, timeout=60), operator.log("teleop")
    finally:
        holding.set()
        if operator is not None:
            assert operator.stop() == 0
        assert graph.stop() == 0
