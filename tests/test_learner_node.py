"""The learner node as a real process: publishes the zero residual at start, follows the store for
new rollouts, trains once the update-to-data ratio allows, streams validated weights, survives
kill -9 and resumes from its checkpoint."""
import json
import os
import signal

import numpy as np
import pytest
import yaml
from std_msgs.msg import UInt8MultiArray

from robot_rl.config import load_profile
from robot_rl.rl import load_actor_weights
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner
from policy_fixtures import tiny_checkpoints, write_episodes

pytestmark = pytest.mark.timeout(300)
PROFILE = load_profile("sim")


def latest_weights(probe):
    latest = probe.latest(topics.LEARNER_WEIGHTS)
    return None if latest is None else convert.msg_to_weights(latest.msg)


def test_learner_trains_from_new_rollouts_and_resumes(probe, tmp_path):
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 4)
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    data = yaml.safe_load(open(PROFILE.source))
    data["nodes"] = [{"name": "learner", "executable": "learner_node", "params": {
        "store": str(store), "base_checkpoint": str(base), "preset": "tiny", "run_dir": str(tmp_path / "run"),
        "publish_every": 5, "checkpoint_every_s": 0.5}}]
    path = tmp_path / "learner.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = load_profile(str(path))
    probe.watch(topics.LEARNER_WEIGHTS, UInt8MultiArray, qos.LATCHED)

    runner = GraphRunner(profile, out=None).start()
    try:
        assert probe.wait_count(topics.LEARNER_WEIGHTS, 1, timeout=120), runner.log("learner")
        blob, meta = latest_weights(probe)
        assert meta["version"] == 0 and meta["exploration"] == "uniform"  # the zero residual, warming up
        load_actor_weights(blob, meta, meta["architecture"])  # checksum, shapes, finite
        write_episodes(PROFILE, store, "rollout", 8, seed=1)  # 160 online steps > the tiny preset's warm-up
        assert probe.wait_for(lambda: latest_weights(probe)[1]["version"] > 0, timeout=120), runner.log("learner")
        assert probe.wait_for(lambda: latest_weights(probe)[1]["step"] == 160, timeout=60)  # all 8 ingested
        trained = latest_weights(probe)[1]
        assert trained["exploration"] == "gaussian"
        state = tmp_path / "run" / "learner" / "state.json"

        def checkpointed():  # a periodic checkpoint with every rollout ingested
            return state.is_file() and json.loads(state.read_text())["counters"]["env_steps"] == 160

        assert probe.wait_for(checkpointed, timeout=60)
        os.kill(runner.nodes[0].process.pid, signal.SIGKILL)
        runner.stop()
    finally:
        runner.stop()

    probe.clear(topics.LEARNER_WEIGHTS)
    runner = GraphRunner(profile, out=None).start()
    try:
        assert probe.wait_count(topics.LEARNER_WEIGHTS, 1, timeout=120), runner.log("learner")
        assert probe.wait_for(lambda: "learner resumed" in runner.log("learner"), timeout=30), runner.log("learner")
        resumed = latest_weights(probe)[1]
        assert resumed["step"] == 160 and resumed["version"] > 0  # counters restored, env steps not recounted
    finally:
        assert runner.stop() == 0


def test_learner_without_demonstrations_is_a_clear_error(tmp_path):
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "rollout", 1)
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    data = yaml.safe_load(open(PROFILE.source))
    data["nodes"] = [{"name": "learner", "executable": "learner_node", "params": {
        "store": str(store), "base_checkpoint": str(base), "preset": "tiny", "run_dir": str(tmp_path / "run")}}]
    path = tmp_path / "learner.yaml"
    path.write_text(yaml.safe_dump(data))
    runner = GraphRunner(load_profile(str(path)), out=None).start()
    runner.wait(120)  # returns when the node exits (or after 120 s), then stops the graph
    assert runner.first_exit is not None and runner.first_exit[1] == 2
    assert "no demonstrations" in runner.log("learner")
