"""`robot-rl finetune` end to end through the ROS graph (lockstep sim, policy + residual, rollout
recorder, episode manager, learner), with a tiny base and preset: rollouts extend the store with
base action and residual, the learner trains from them and streams weights the policy accepts."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from robot_rl.config import load_profile
from robot_rl.data.store import Store
from robot_rl.data.store_check import check
from robot_rl.policies.checkpoint import checkpoint_hash
from robot_rl.rl.relabel import cache_path
from robot_rl.ros import topics
from policy_fixtures import tiny_checkpoints, write_episodes

PROFILE = load_profile("sim")


@pytest.mark.timeout(600)
def test_finetune_session_extends_the_store_and_trains(tmp_path, ros_domain):
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 4)
    run = tmp_path / "run"
    # the residual also takes the base's features (computed by the policy node per chunk, by the
    # learner per stored chunk start) and decides once per chunk: both sides must agree or every
    # weight message is rejected
    rl_config = tmp_path / "rl.yaml"
    rl_config.write_text("preset: tiny\ndecision: chunk\nencoder: {base_features: true}\n")
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "finetune", "--base", str(base),
                             "--store", str(store), "--rl-config", str(rl_config), "--episodes", "5",
                             "--max-steps", "40", "--run-dir", str(run)], capture_output=True, text=True, timeout=540)
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
    lower, upper = [np.array([getattr(j, b) for j in PROFILE.robot.joints]) for b in ("lower", "upper")]
    H = 3  # the tiny base's executed chunk: one residual held per chunk (where no joint limit clipped it)
    held = []
    for m in rollouts:  # episodes may be short: every rollout's whole chunks
        e = s.read_episode(m["index"])
        # the policy node's chunk phases are recorded (lockstep: chunks back to back)
        assert e["chunk_phase"].tolist() == (np.arange(m["length"]) % H).tolist()
        held += [e["residual"][k:k + H] for k in range(0, len(e["residual"]) - H + 1, H)
                 if ((e["action"][k:k + H] > lower + 1e-4) & (e["action"][k:k + H] < upper - 1e-4)).all()]
    assert len(held) >= 3 and all(np.allclose(r, r[0], atol=1e-5) for r in held)
    assert len({tuple(np.round(r[0], 5)) for r in held}) >= 3  # a new draw per chunk
    learner = done[-1]["learner"]
    assert int(learner["env_steps"]) > 0 and int(learner["weight_version"]) >= 0
    policy = done[-1]["policy"]
    assert int(policy["weights_accepted"]) >= 1 and int(policy["weights_rejected"]) == 0, policy
    assert cache_path(store, checkpoint_hash(base), obs_horizon=2, tag="features").exists()


@pytest.mark.timeout(600)
def test_finetune_with_a_gated_offset_residual(tmp_path, ros_domain):
    """decision: offset through the graph: the policy node changes a joint offset every 4 ticks while the
    gate is open (here: always), the learner cuts the recorded rollouts into the same decisions and the
    policy accepts its weights."""
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 2)
    run = tmp_path / "run"
    rl_config = tmp_path / "rl.yaml"
    rl_config.write_text("preset: tiny\ndecision: offset\ndemo_fraction: 0\nutd: 0.5\nwarmup_env_steps: 40\n"
                         "critic_warmup_updates: 20\noffset: {space: joint, gate_below: 1.0, range: 0.1}\n")
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "finetune", "--base", str(base),
                             "--store", str(store), "--rl-config", str(rl_config), "--episodes", "8",
                             "--max-steps", "30", "--run-dir", str(run)], capture_output=True, text=True, timeout=540)
    log = (run / "graph.log").read_text() if (run / "graph.log").exists() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + log[-3000:]
    s = Store.open(store)
    rollouts = [m for m in s.episodes_meta() if m["source"] == "rollout"]
    assert len(rollouts) == 8
    blocks = 0
    for m in rollouts:
        e = s.read_episode(m["index"])
        assert not e["residual"][:, 5].any() and np.abs(e["residual"]).max() <= 0.1 + 1e-6  # arm only, in range
        for k in range(0, m["length"] - 3, 4):  # one offset per 4 ticks (no joint limit near here)
            assert np.allclose(e["residual"][k:k + 4], e["residual"][k], atol=1e-6)
            blocks += 1
    assert blocks >= 16 and np.abs(e["residual"]).max() > 0  # the last rollout explored offsets
    done = [json.loads(line) for line in (run / "session.jsonl").read_text().splitlines()]
    done = [e for e in done if e["event"] == "episode_done"]
    learner, policy = done[-1]["learner"], done[-1]["policy"]
    assert int(learner["env_steps"]) > 0 and int(learner["online_size"]) > 0
    assert int(policy["weights_accepted"]) >= 1 and int(policy["weights_rejected"]) == 0, policy


def _diag(probe, node):
    """Newest /diagnostics key/values of `node` seen by the probe ({} if none)."""
    for arrival in reversed(probe.arrivals[topics.DIAGNOSTICS]):
        for status in arrival.msg.status:
            if status.name.rsplit("/", 1)[-1] == node:
                return {kv.key: kv.value for kv in status.values}
    return {}


@pytest.mark.timeout(600)
def test_learner_kill9_policy_keeps_control_and_learner_resumes_exactly(tmp_path, probe):
    """kill -9 of the learner mid-session: the policy node keeps controlling with the last weights
    (episodes keep completing, no new weights, nothing rejected); the restarted learner resumes from
    its checkpoint and publishes weights that act exactly like the checkpoint on a fixed probe batch,
    and the policy node takes them although their version may be older than the pre-kill ones."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray

    from robot_rl.rl import load_checkpoint, policy_from_weights
    from robot_rl.ros import convert, qos
    from robot_rl.ros.graph import GraphRunner

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 4)
    learner_run = tmp_path / "learner_run"
    overrides = {
        "sim_robot": {"clock": "lockstep"},
        "policy": {"checkpoint": str(base), "residual": "true", "rl_preset": "tiny", "tick": "observation"},
        "rollout_recorder": {"store": str(store), "mode": "rollout", "base_checkpoint": str(base)},
        "episode_manager": {"episodes": "0", "max_steps": "30"},
        "learner": {"store": str(store), "base_checkpoint": str(base), "preset": "tiny", "run_dir": str(learner_run),
                    "publish_every": "5", "checkpoint_every_s": "0.5"},
    }
    for topic, kind, profile_qos in ((topics.LEARNER_WEIGHTS, UInt8MultiArray, qos.LATCHED),
                                     (topics.EPISODE_EVENTS, String, qos.RELIABLE),
                                     (topics.DIAGNOSTICS, DiagnosticArray, qos.RELIABLE)):
        probe.watch(topic, kind, profile_qos)
    robot_side = ["sim_robot", "policy", "rollout_recorder", "episode_manager"]
    graph = GraphRunner(PROFILE, mode="finetune", only=robot_side, overrides=overrides,
                        log_path=tmp_path / "graph.log").start()
    learner = GraphRunner(PROFILE, mode="finetune", only=["learner"], overrides=overrides,
                          log_path=tmp_path / "learner.log").start()
    state = learner_run / "learner" / "state.json"

    def episodes_done():
        return sum(json.loads(a.msg.data)["event"] == "episode_done" for a in probe.arrivals[topics.EPISODE_EVENTS])

    try:
        # trained weights (actor updates happened) that the policy runs, and a checkpoint of them
        def actor_trained():
            latest = probe.latest(topics.LEARNER_WEIGHTS)
            return latest is not None and convert.msg_to_weights(latest.msg)[1]["actor_updates"] > 0
        assert probe.wait_for(actor_trained, timeout=300), (tmp_path / "learner.log").read_text()[-3000:]
        assert probe.wait_for(lambda: state.is_file() and json.loads(state.read_text())["counters"]["actor_updates"] > 0,
                              timeout=60)
        os.killpg(learner.nodes[0].process.pid, signal.SIGKILL)
        learner.stop()
        last_data, last_meta = convert.msg_to_weights(probe.latest(topics.LEARNER_WEIGHTS).msg)
        assert probe.wait_for(lambda: int(_diag(probe, "policy").get("weights_version", -1)) == last_meta["version"],
                              timeout=30)

        # the robot side goes on without a learner: episodes complete, same weights, nothing rejected
        before = episodes_done()
        assert probe.wait_for(lambda: episodes_done() >= before + 3, timeout=180), \
            (tmp_path / "graph.log").read_text()[-3000:]
        assert graph.poll() == []
        policy = _diag(probe, "policy")
        assert int(policy["weights_version"]) == last_meta["version"] and policy["weights_rejected"] == "0"

        # restart: the learner resumes from its checkpoint
        ckpt = load_checkpoint(learner_run / "learner")
        probe.clear(topics.LEARNER_WEIGHTS)
        learner = GraphRunner(PROFILE, mode="finetune", only=["learner"], overrides=overrides,
                              log_path=tmp_path / "learner2.log").start()
        assert probe.wait_count(topics.LEARNER_WEIGHTS, 1, timeout=120), (tmp_path / "learner2.log").read_text()
        data, meta = convert.msg_to_weights(probe.arrivals[topics.LEARNER_WEIGHTS][0].msg)
        assert meta["version"] == ckpt.critic_updates and meta["step"] == ckpt.env_steps
        resumed = policy_from_weights(data, meta, meta["architecture"])
        g = torch.Generator().manual_seed(0)
        obs = {k: (torch.rand((16, *s.shape), generator=g) * (255 if s.dtype == "uint8" else 1)).to(
            torch.uint8 if s.dtype == "uint8" else torch.float32) for k, s in ckpt.obs_spec.items()}
        base_a = torch.rand((16, len(PROFILE.robot.joints)), generator=g)
        phase = torch.arange(16) % ckpt.cfg.chunk_length
        torch.testing.assert_close(resumed(obs, base_a, phase).action, ckpt.policy.eval()(obs, base_a, phase).action,
                                   rtol=0, atol=0)
        if meta["version"] == last_meta["version"]:  # checkpointed at the last publish: the very same weights
            assert data == last_data
        # the policy node takes the restarted learner's weights (a newer incarnation)
        accepted = int(_diag(probe, "policy").get("weights_accepted", 0))
        assert probe.wait_for(lambda: int(_diag(probe, "policy").get("weights_accepted", 0)) > accepted, timeout=60)
        assert _diag(probe, "policy")["weights_rejected"] == "0"
    finally:
        learner.stop()
        graph.stop()


@pytest.mark.timeout(600)
def test_teleop_intervention_takes_over_and_is_recorded_as_such(tmp_path, ros_domain):
    """HIL-SERL: while the teleop device intervenes, the policy node executes its command at the next
    tick; the episode is committed as an `intervention` episode with per-step flags, and the learner
    puts it in its demo buffer as well as the online one. The sim's scripted expert plays the human."""
    import yaml

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 4)
    data = yaml.safe_load(open(PROFILE.source))
    data["nodes"].append({"name": "operator", "executable": "teleop_node", "modes": ["finetune"],
                          "params": {"device": "expert", "drive_robot": False, "expert_noise": 0.0}})
    profile = tmp_path / "hil.yaml"
    profile.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "finetune", "--profile", str(profile),
                             "--base", str(base), "--store", str(store), "--preset", "tiny", "--episodes", "3",
                             "--max-steps", "150", "--run-dir", str(run), "--no-report",
                             "--clock", "realtime"],  # the closed-loop expert acts at the control rate, as a human
                            capture_output=True, text=True, timeout=540)
    log = (run / "graph.log").read_text() if (run / "graph.log").exists() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + log[-3000:]
    done = [json.loads(x) for x in (run / "session.jsonl").read_text().splitlines()]
    done = [e for e in done if e["event"] == "episode_done"]
    assert len(done) == 3 and all(e["interventions"] > 0 for e in done)
    s = Store.open(store)
    episodes = [m for m in s.episodes_meta() if m["source"] != "demo"]
    assert [m["source"] for m in episodes] == ["intervention"] * 3
    assert sum(m["success"] for m in episodes) >= 2  # the noise-free expert drove (the tiny base never succeeds)
    for m in episodes:
        ep = s.read_episode(m["index"])
        assert ep["intervention"].mean() > 0.8  # from the first ticks on (the teleop stream was up)
        steps = ep["intervention"].astype(bool)
        # executed = the human's command; base_action is what the base would have done; residual = their gap
        np.testing.assert_allclose(ep["action"][steps], np.clip(ep["base_action"] + ep["residual"],
                                   [j.lower for j in PROFILE.robot.joints], [j.upper for j in PROFILE.robot.joints])[steps],
                                   atol=1e-5)
        assert np.abs(ep["residual"][steps]).max() > 0.01
    learner = done[-1]["learner"]
    assert int(learner["demo_size"]) > sum(m["length"] for m in s.episodes_meta() if m["source"] == "demo")


def test_finetune_bad_inputs_are_refused_before_anything_starts(tmp_path, capsys):
    """Another robot's base checkpoint or a store without demonstrations: exit 2 with one line
    naming the problem, before any node process is launched."""
    import yaml

    from robot_rl.cli.main import main

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "store.zarr"
    write_episodes(PROFILE, store, "demo", 2)
    data = yaml.safe_load(open(PROFILE.source))
    data["cameras"][0]["width"] = 64  # another setup: the front camera's resolution differs
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    common = ["--preset", "tiny", "--episodes", "1", "--run-dir", str(tmp_path / "run")]
    assert main(["finetune", "--profile", str(other), "--base", str(base), "--store", str(store), *common]) == 2
    err = capsys.readouterr().err
    assert "does not fit profile" in err and "camera_front" in err
    rollouts_only = tmp_path / "rollouts.zarr"
    write_episodes(PROFILE, rollouts_only, "rollout", 2)
    assert main(["finetune", "--base", str(base), "--store", str(rollouts_only), *common]) == 2
    assert "no successful demonstrations" in capsys.readouterr().err
    assert main(["finetune", "--base", str(base), "--store", str(tmp_path / "missing.zarr"), *common]) == 2
    assert main(["finetune", "--base", str(base), "--store", str(store), "--drift", "hip=0.1", *common]) == 2
    assert "--drift" in (err := capsys.readouterr().err) and "hip=0.1" in err and "waist" in err
    assert not (tmp_path / "run" / "graph.log").exists()


@pytest.mark.timeout(180)
def test_a_session_client_that_subscribes_late_still_hears_every_episode(tmp_path, probe):
    """With `await_listeners` (what robot-rl finetune sets) no episode starts before the session's
    client listens on /episode/events: a 12-step lockstep episode can be over before discovery.
    The client here subscribes only once the store has an episode or 15 s have passed."""
    from std_msgs.msg import String

    from robot_rl.ros import qos
    from robot_rl.ros.graph import GraphRunner
    from waiting import wait_until

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "rollouts.zarr"
    overrides = {"sim_robot": {"clock": "lockstep"},
                 "policy": {"checkpoint": str(base), "tick": "observation"},
                 "rollout_recorder": {"store": str(store), "mode": "rollout", "base_checkpoint": str(base)},
                 "episode_manager": {"episodes": "2", "max_steps": "12", "await_listeners": "1"}}
    runner = GraphRunner(PROFILE, mode="finetune", only=["sim_robot", "policy", "rollout_recorder", "episode_manager"],
                         out=None, overrides=overrides).start()
    try:
        def committed() -> int:
            try:
                with Store.open(store) as s:
                    return s.n_episodes
            except Exception:  # noqa: BLE001 - not created yet
                return 0

        wait_until(lambda: committed() > 0 or runner.poll(), timeout=15, interval=0.2)
        assert committed() == 0, "an episode ran before anyone listened to the session's events"
        probe.watch(topics.EPISODE_EVENTS, String, qos.RELIABLE)

        def events(kind):
            return [e for e in (json.loads(a.msg.data) for a in probe.arrivals[topics.EPISODE_EVENTS])
                    if e["event"] == kind]

        assert probe.wait_for(lambda: events("session_done") or runner.first_exit is not None, 120), \
            runner.log("episode_manager")
        assert [e["index"] for e in events("episode_done")] == [0, 1]
    finally:
        assert runner.stop() == 0
