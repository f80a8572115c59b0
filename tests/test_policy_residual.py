"""The policy node in fine-tuning mode (real processes, lockstep sim): step-0 parity with the zero
residual, validated weight swaps (corrupted / NaN / wrong-architecture messages rejected and counted,
the running residual kept), and the new residual acting from the next tick."""
import hashlib

import numpy as np
import pytest
import rclpy
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt8MultiArray
from std_srvs.srv import SetBool

from robot_rl.config import load_profile
from robot_rl.data.store import Store
from robot_rl.rl import agent_from_store, export_actor_weights, preset
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner
from robot_rl.ros.sim_client import RobotClient
from policy_fixtures import tiny_checkpoints, write_episodes

pytestmark = pytest.mark.timeout(300)
PROFILE = load_profile("sim")


def reweigh(data: bytes, meta: dict, change) -> tuple[bytes, dict]:
    tensors = st_load(data)
    change(tensors)
    blob = st_save(tensors)
    return blob, {**meta, "sha256": hashlib.sha256(blob).hexdigest()}


def test_residual_parity_validation_and_swap(tmp_path, ros_domain):
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]  # exec_horizon 3
    write_episodes(PROFILE, tmp_path / "store.zarr", "demo", 2)
    agent = agent_from_store(Store.open(tmp_path / "store.zarr"), preset("tiny", chunk_length=3))
    zero, zero_meta = export_actor_weights(agent)
    # the zero-initialised output layer: the actor's all-zero weight matrix
    last = next(k for k, v in st_load(zero).items() if "actor" in k and v.ndim == 2 and not v.any())

    overrides = {"sim_robot": {"clock": "lockstep", "seed": "2"},
                 "policy": {"checkpoint": str(base), "tick": "observation", "residual": "true",
                            "rl_preset": "tiny", "explore": "false"}}
    runner = GraphRunner(PROFILE, mode="deploy", overrides=overrides, out=None).start()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    client = RobotClient(PROFILE, context=context, name="residual_probe")
    probe = client.probe
    for topic in (topics.POLICY_BASE_ACTION, topics.POLICY_RESIDUAL, topics.ROBOT_COMMAND):
        probe.watch(topic, JointState, qos.RELIABLE)
    weights = probe.node.create_publisher(UInt8MultiArray, topics.LEARNER_WEIGHTS, qos.LATCHED)
    enable = probe.node.create_client(SetBool, topics.POLICY_ENABLE)

    def counters():
        d = client.diagnostics("policy", timeout=10)
        return int(d["weights_accepted"]), int(d["weights_rejected"]), d["weights_last_reject_reason"]

    def run_steps(n):
        for topic in (topics.POLICY_BASE_ACTION, topics.POLICY_RESIDUAL, topics.ROBOT_COMMAND):
            probe.clear(topic)
        client.reset(clear_streams=False)
        client.call(enable, SetBool.Request(data=True))
        assert probe.wait_count(topics.ROBOT_COMMAND, n, timeout=60), runner.log("policy")
        client.call(enable, SetBool.Request(data=False))
        get = lambda t: np.array([a.msg.position for a in list(probe.arrivals[t])[:n]])  # noqa: E731
        return get(topics.POLICY_BASE_ACTION), get(topics.POLICY_RESIDUAL), get(topics.ROBOT_COMMAND)

    try:
        assert enable.wait_for_service(timeout_sec=90), runner.log("policy")
        assert probe.wait_matched(weights, timeout=30)
        for topic in client.watched:
            assert probe.wait_for(lambda t=topic: probe.node.count_publishers(t) > 0, 30), topic
        weights.publish(convert.weights_to_msg(zero, zero_meta))
        assert probe.wait_for(lambda: counters()[0] == 1, timeout=30)

        base_a, residual, command = run_steps(6)  # step-0 parity: base + zero residual == base, bit for bit
        assert np.array_equal(residual, np.zeros_like(residual)) and np.array_equal(command, base_a)

        bad = {  # reason -> message; a corrupt payload fails its checksum first
            "checksum": (zero[:-7] + b"garbage", {**zero_meta, "version": 5}),
            "checksum ": (zero, {**zero_meta, "version": 5, "sha256": "0" * 64}),
            "non_finite": reweigh(zero, {**zero_meta, "version": 5}, lambda t: t[last].fill_(float("nan"))),
            "architecture": (zero, {**zero_meta, "version": 5, "architecture": '{"other": 1}'}),
        }
        for i, (reason, (blob, meta)) in enumerate(bad.items(), start=1):
            weights.publish(convert.weights_to_msg(blob, meta))
            assert probe.wait_for(lambda i=i: counters()[1] == i, timeout=30), reason
            assert f"({reason.strip()})" in counters()[2]
        assert counters()[0] == 1  # still running the zero residual
        _, residual, _ = run_steps(3)
        assert not residual.any()

        torch.manual_seed(1)
        live, live_meta = reweigh(zero, {**zero_meta, "version": 7},
                                  lambda t: t[last].copy_(torch.randn_like(t[last]) * 0.5))
        weights.publish(convert.weights_to_msg(live, live_meta))
        assert probe.wait_for(lambda: counters()[0] == 2, timeout=30)
        base_a, residual, command = run_steps(6)
        assert np.abs(residual).max() > 1e-4  # the new residual acts
        np.testing.assert_allclose(command, base_a + residual, atol=1e-9)
        assert runner.poll() == []
    finally:
        client.close()
        context.try_shutdown()
        assert runner.stop() == 0


def test_runner_with_base_features_checks_their_size(tmp_path):
    """A residual that takes the base's features: the runner builds the architecture with them and
    rejects weights of a residual without them (no ROS: the node only hands the chunk's features in)."""
    from robot_rl.control.residual import ResidualRunner
    from robot_rl.rl.encoder import BASE_FEATURES

    write_episodes(PROFILE, tmp_path / "store.zarr", "demo", 1)
    store = Store.open(tmp_path / "store.zarr")
    (tmp_path / "rl.yaml").write_text("preset: tiny\nencoder: {base_features: true}\n")
    cfg = preset("tiny", chunk_length=3, encoder={"base_features": True})
    with_features = agent_from_store(store, cfg, base_feature_dim=8)
    without = agent_from_store(store, preset("tiny", chunk_length=3))
    runner = ResidualRunner(PROFILE, 3, "tiny", rl_config=str(tmp_path / "rl.yaml"), base_feature_dim=8)
    assert runner.wants_base_features
    assert not runner.offer(*export_actor_weights(without)) and "architecture" in runner.counters.last_reject_reason
    assert runner.offer(*export_actor_weights(with_features))
    ep = store.read_episode(0)
    obs = {k: ep[k][0] for k in with_features.obs_spec if k != BASE_FEATURES}
    obs[BASE_FEATURES] = np.ones(8, np.float32)
    base = ep["action"][0].astype(np.float64)
    assert np.array_equal(runner.apply(obs, base, 0, explore=False), np.zeros_like(base))


def test_runner_holds_exploration_noise_for_a_chunk(tmp_path):
    """explore_hold: chunk -> one noise draw per base chunk (phase 0 or a phase that went back)."""
    from robot_rl.control.residual import ResidualRunner

    write_episodes(PROFILE, tmp_path / "store.zarr", "demo", 1)
    store = Store.open(tmp_path / "store.zarr")
    agent = agent_from_store(store, preset("tiny", chunk_length=3, explore_hold="chunk"))
    data, meta = export_actor_weights(agent)
    assert meta["explore_hold"] == "chunk"
    runner = ResidualRunner(PROFILE, 3, "tiny")
    assert runner.offer(data, meta)
    ep = store.read_episode(0)
    obs = {k: ep[k][0] for k in agent.obs_spec}
    base = ep["action"][0].astype(np.float64)
    per_tick = [runner.apply(obs, base, phase, explore=True) for phase in (0, 1, 2, 0, 1, 1)]
    assert np.abs(per_tick[0]).max() > 0
    assert np.array_equal(per_tick[0], per_tick[1]) and np.array_equal(per_tick[1], per_tick[2])
    assert not np.array_equal(per_tick[2], per_tick[3])  # a new chunk: a new draw
    assert np.array_equal(per_tick[3], per_tick[4]) and not np.array_equal(per_tick[4], per_tick[5])
    assert np.array_equal(runner.apply(obs, base, 2, explore=False), np.zeros_like(base))
    step = ResidualRunner(PROFILE, 3, "tiny")  # the default: a fresh draw every tick
    assert step.offer(*export_actor_weights(agent_from_store(store, preset("tiny", chunk_length=3))))
    assert not np.array_equal(step.apply(obs, base, 0, explore=True), step.apply(obs, base, 1, explore=True))


def test_runner_holds_exploration_noise_for_an_episode(tmp_path):
    """explore_hold: episode -> one draw for every tick of an episode, a new one after new_episode()."""
    from robot_rl.control.residual import ResidualRunner

    write_episodes(PROFILE, tmp_path / "store.zarr", "demo", 1)
    store = Store.open(tmp_path / "store.zarr")
    agent = agent_from_store(store, preset("tiny", chunk_length=3, explore_hold="episode"))
    runner = ResidualRunner(PROFILE, 3, "tiny")
    assert runner.offer(*export_actor_weights(agent))
    ep = store.read_episode(0)
    obs = {k: ep[k][0] for k in agent.obs_spec}
    base = ep["action"][0].astype(np.float64)
    first = [runner.apply(obs, base, phase, explore=True) for phase in (0, 1, 2, 0, 1)]
    assert np.abs(first[0]).max() > 0 and all(np.array_equal(first[0], r) for r in first[1:])
    runner.new_episode()
    assert not np.array_equal(runner.apply(obs, base, 0, explore=True), first[0])
    assert np.array_equal(runner.apply(obs, base, 1, explore=False), np.zeros_like(base))
