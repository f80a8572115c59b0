"""`robot-rl finetune` end to end through the ROS graph (lockstep sim, policy + residual, rollout
recorder, episode manager, learner), with a tiny base and preset: rollouts extend the store with
base action and residual, the learner trains from them and streams weights the policy accepts."""
import json
import subprocess
import sys

import numpy as np
import pytest

from robot_rl.config import load_profile
from robot_rl.data.store import Store
from robot_rl.data.store_check import check
from robot_rl.policies.checkpoint import checkpoint_hash
from policy_fixtures import tiny_checkpoints, write_episodes

PROFILE = load_profile("sim")


@pytest.mark.timeout(600)
def test_finetune_session_extends_the_store_and_trains(tmp_path, ros_domain):
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 4)
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "finetune", "--base", str(base),
                             "--store", str(store), "--preset", "tiny", "--episodes", "5", "--max-steps", "40",
                             "--run-dir", str(run)], capture_output=True, text=True, timeout=540)
    log = (run / "graph.log").read_text() if (run / "graph.log").exists() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + log[-3000:]
    assert "5 episodes" in result.stdout
    events = [json.loads(line) for line in (run / "session.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "episode_done"]
    assert len(done) == 5 and all(1 <= e["steps"] <= 40 for e in done)
    assert check(store) == []
    s = Store.open(store)
    meta = s.episodes_meta()
    rollouts = [m for m in meta if m["source"] == "rollout"]
    assert len(rollouts) == 5 and all(m["base_ckpt"] == checkpoint_hash(base) for m in rollouts)
    ep = s.read_episode(rollouts[-1]["index"])
    np.testing.assert_allclose(ep["action"], np.clip(ep["base_action"] + ep["residual"],
                                                     [j.lower for j in PROFILE.robot.joints],
                                                     [j.upper for j in PROFILE.robot.joints]), atol=1e-5)
    assert np.abs(ep["residual"]).max() > 0  # exploration noise during the warm-up, then the residual
    learner = done[-1]["learner"]
    assert int(learner["env_steps"]) > 0 and int(learner["weight_version"]) >= 0
