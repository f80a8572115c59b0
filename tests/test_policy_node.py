"""The policy node (real process, lockstep sim) acts exactly like the checkpoint does in the training
process: same observation in, same actions out; plus its bad-input behaviour."""
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from robot_rl.config import load_profile
from robot_rl.policies.policy import load_policy
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner
from robot_rl.ros.sim_client import RobotClient
from policy_fixtures import tiny_checkpoints

pytestmark = pytest.mark.timeout(240)
PROFILE = load_profile("sim")
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpts"), PROFILE)


def observation_at(client: RobotClient, stamp: float) -> dict[str, np.ndarray]:
    """The store-keyed observation the sim published at `stamp`, as the probe received it."""
    def at(topic):
        return next(a.msg for a in client.probe.arrivals[topic] if abs(a.stamp - stamp) < 1e-6)

    js = at(topics.JOINT_STATES)
    obs = {"obs/joint_pos": np.asarray(js.position, np.float32), "obs/joint_vel": np.asarray(js.velocity, np.float32)}
    for cam in PROFILE.cameras:
        obs[f"obs/camera_{cam.name}"] = convert.msg_to_image(at(topics.camera_color(cam.name))).copy()
    for tac in PROFILE.tactile:
        obs[f"obs/tactile_{tac.name}"] = convert.msg_to_image(at(topics.tactile_image(tac.name))).copy()
    return obs


@pytest.mark.parametrize("kind", ["bc", "diffusion"])
def test_node_actions_equal_the_checkpoint_in_process(kind, checkpoints, ros_domain):
    checkpoint = checkpoints[kind]
    policy = load_policy(checkpoint, PROFILE)
    overrides = {"sim_robot": {"clock": "lockstep", "seed": "5"},
                 "policy": {"checkpoint": str(checkpoint), "tick": "observation", "seed": "0"}}
    runner = GraphRunner(PROFILE, mode="deploy", overrides=overrides, out=None).start()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    client = RobotClient(PROFILE, context=context, name="parity_probe")
    client.probe.watch(topics.POLICY_BASE_ACTION, JointState, qos.RELIABLE)
    enable = client.probe.node.create_client(SetBool, topics.POLICY_ENABLE)
    try:
        assert enable.wait_for_service(timeout_sec=90), runner.log("policy")
        assert client.reset_client.wait_for_service(timeout_sec=60)
        for topic in client.watched:  # every stream matched before the one observation a reset sends
            assert client.probe.wait_for(lambda t=topic: client.probe.node.count_publishers(t) > 0, 30), topic
        client.reset(clear_streams=True)
        assert client.probe.wait_count(topics.camera_color("wrist"), 1, timeout=30)
        client.call(enable, SetBool.Request(data=True))
        steps = policy.exec_horizon
        assert client.probe.wait_count(topics.POLICY_BASE_ACTION, steps, timeout=60), runner.log("policy")
        client.call(enable, SetBool.Request(data=False))
        actions = list(client.probe.arrivals[topics.POLICY_BASE_ACTION])[:steps]
        t0 = actions[0].stamp
        obs = observation_at(client, t0)
        window = {k: np.stack([v] * policy.obs_horizon) for k, v in obs.items() if k in policy.obs_keys}
        expected = policy.predict(window, seed=0)  # the node's first chunk uses seed + 0
        for k, arrival in enumerate(actions):
            assert arrival.stamp == pytest.approx(t0 + k / PROFILE.robot.control_rate_hz, abs=1e-6)
            np.testing.assert_allclose(np.asarray(arrival.msg.position), expected[k], atol=1e-5)
    finally:
        client.close()
        context.try_shutdown()
        assert runner.stop() == 0


def test_an_enable_acts_from_the_reset_never_on_the_previous_episodes_last_observation(checkpoints, ros_domain):
    """Lockstep: an episode ends on an observation the policy never acted on (the sim stepped the
    policy's last command). Enabled again, the policy must wait for the reset and start a chunk on its
    first observation; acting on the old one would step the reset sim with the previous episode's
    command and record it as the new episode's first step (CI once saw chunk phases 0, 1, 0, 1, 2)."""
    overrides = {"sim_robot": {"clock": "lockstep", "seed": "5"},
                 "policy": {"checkpoint": str(checkpoints["bc"]), "tick": "observation", "seed": "0"}}
    runner = GraphRunner(PROFILE, mode="deploy", overrides=overrides, out=None).start()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    client = RobotClient(PROFILE, context=context, name="enable_probe")
    probe = client.probe
    for topic in (topics.POLICY_BASE_ACTION, topics.POLICY_CHUNK_PHASE):
        probe.watch(topic, JointState, qos.RELIABLE)
    enable = probe.node.create_client(SetBool, topics.POLICY_ENABLE)
    try:
        assert enable.wait_for_service(timeout_sec=90), runner.log("policy")
        assert client.reset_client.wait_for_service(timeout_sec=60)
        for topic in client.watched:
            assert probe.wait_for(lambda t=topic: probe.node.count_publishers(t) > 0, 30), topic
        client.reset(clear_streams=True)
        client.call(enable, SetBool.Request(data=True))
        assert probe.wait_count(topics.POLICY_BASE_ACTION, 2, timeout=60), runner.log("policy")
        client.call(enable, SetBool.Request(data=False))
        time.sleep(0.5)  # a tick under way at the disable has published by now
        acted = {round(a.stamp, 6) for a in probe.arrivals[topics.POLICY_BASE_ACTION]}
        unacted = probe.latest(topics.JOINT_STATES).stamp
        assert unacted > max(acted) and probe.wait_for(
            lambda: probe.latest(topics.camera_color("wrist")).stamp >= unacted, 10)
        n = len(probe.arrivals[topics.POLICY_BASE_ACTION])
        client.call(enable, SetBool.Request(data=True))
        time.sleep(0.5)  # time to act on the unacted observation, if the policy would
        state = client.reset(clear_streams=False)
        assert probe.wait_count(topics.POLICY_BASE_ACTION, n + 1, timeout=60), runner.log("policy")
        client.call(enable, SetBool.Request(data=False))
        first = list(probe.arrivals[topics.POLICY_BASE_ACTION])[n]
        assert first.stamp == pytest.approx(state["stamp"], abs=1e-6), (first.stamp, unacted, state["stamp"])
        phase = next(a for a in probe.arrivals[topics.POLICY_CHUNK_PHASE] if abs(a.stamp - first.stamp) < 1e-6)
        assert phase.msg.position[0] == 0
    finally:
        client.close()
        context.try_shutdown()
        assert runner.stop() == 0


def test_a_policy_that_missed_the_resets_task_state_still_acts(checkpoints, ros_domain):
    """Lockstep: an evaluation resets the sim as soon as it answers, which can be before the policy's
    subscriptions have matched. Time then stands still until a command comes; the sim re-sends its
    last observation and task state, and the policy must act on them (it once waited forever for a
    task state that was never repeated)."""
    sim = GraphRunner(PROFILE, mode="deploy", only=["sim_robot"], out=None,
                      overrides={"sim_robot": {"clock": "lockstep", "seed": "5"}}).start()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    client = RobotClient(PROFILE, context=context, name="late_policy_probe")
    probe = client.probe
    probe.watch(topics.POLICY_BASE_ACTION, JointState, qos.RELIABLE)
    policy = None
    try:
        assert client.reset_client.wait_for_service(timeout_sec=60), sim.log("sim_robot")
        for topic in client.watched:
            assert probe.wait_for(lambda t=topic: probe.node.count_publishers(t) > 0, 30), topic
        state = client.reset(clear_streams=True)  # no policy exists yet: nobody else hears this reset
        policy = GraphRunner(PROFILE, mode="deploy", only=["policy"], out=None,
                             overrides={"policy": {"checkpoint": str(checkpoints["bc"]), "tick": "observation"}}).start()
        enable = probe.node.create_client(SetBool, topics.POLICY_ENABLE)
        assert enable.wait_for_service(timeout_sec=90), policy.log("policy")
        client.call(enable, SetBool.Request(data=True))
        assert probe.wait_count(topics.POLICY_BASE_ACTION, 1, timeout=30), policy.log("policy")
        first = probe.arrivals[topics.POLICY_BASE_ACTION][0]
        assert first.stamp == pytest.approx(state["stamp"], abs=1e-6)
    finally:
        client.close()
        context.try_shutdown()
        assert (policy.stop() if policy else 0) == 0 and sim.stop() == 0


def test_checkpoint_for_another_robot_is_a_clear_error(tmp_path, ros_domain):
    import yaml

    data = yaml.safe_load(open(PROFILE.source))
    data["robot"]["joints"].append({"name": "extra", "lower": -1.0, "upper": 1.0, "max_velocity": 1.0})
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    profile = load_profile(str(other))
    runner = GraphRunner(profile, mode="deploy", only=["policy"], out=None,
                         overrides={"policy": {"checkpoint": str(GOLDEN / "bc")}}).start()
    runner.wait(60)  # returns when a node exits (or after 60 s), then stops the graph
    assert runner.first_exit is not None, "the policy node should exit at start"
    assert runner.first_exit[1] == 2
    assert "extra" in runner.log("policy") and "checkpoint" in runner.log("policy")
