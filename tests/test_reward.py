"""Reward classifier (robot_rl/reward, `robot-rl train-reward`, episode manager `label: classifier`).

A small real store is collected in-process (sim robot, rendered cameras, taxels, noisy scripted
expert, episodes cut at 40 steps so about half fail: some mid-task, some with the cube released just
outside the 2 cm goal) through the project's own episode writer; a tiny classifier trains on it and
must tell held-out successful episodes from failed ones. Then: the
checkpoint round trip, another setup refused, the CLI's bad inputs, the session loop ending an
episode on the classifier's signal (no ROS), and the episode manager node through ROS.
"""
import copy
import json
import threading
import time

import numpy as np
import pytest
import torch
import yaml

from robot_rl.config import ConfigError, from_dict, load_profile
from robot_rl.config.nodes import EpisodeManagerParams
from robot_rl.control.session import EpisodeSession
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import open_or_create
from robot_rl.policies.sim_eval import observe
from robot_rl.reward.checkpoint import RewardClassifierError, load_classifier
from robot_rl.reward.config import RewardModelConfig, RewardTrainConfig
from robot_rl.reward.detector import SuccessDetector, first_fire
from robot_rl.reward.metrics import episode_metrics, frame_labels
from robot_rl.reward.train import train_reward
from policy_fixtures import tiny_checkpoints, write_episodes

PROFILE = load_profile("sim")
SEED0, EPISODES, MAX_STEPS, NOISE = 100, 40, 40, 1.0


def expert_steps(robot, expert, seed: int, max_steps: int):
    """Yields (observation, action, success) per control step like the recorder's rows: the
    observation at the tick, the command sent then; the last row is the observation at which the
    episode ended (success seen, or the step budget spent), with action None."""
    robot.reset(seed)
    expert.reset(seed)
    n_sub = max(1, int(round(robot.control_dt / robot.physics_dt)))
    for _ in range(max_steps):
        obs = observe(robot, PROFILE)
        if robot.success():
            break
        action = expert.act(robot.joint_state()[0], robot.task_state())
        yield obs, action, False
        robot.set_target(action)
        robot.step_physics(n_sub)
    yield observe(robot, PROFILE), None, robot.success()


def collect(path, episodes: int) -> list[bool]:
    from robot_rl.sim import ScriptedExpert, SimRobot

    n = len(PROFILE.robot.joints)
    store = open_or_create(path, PROFILE)
    writer = EpisodeWriter(store, background=False)
    results = []
    with SimRobot(PROFILE, seed=SEED0, render=True) as robot:
        expert = ScriptedExpert(PROFILE, seed=SEED0, noise=NOISE)
        for e in range(episodes):
            writer.begin(source="demo")
            last = None
            for t, (obs, action, success) in enumerate(expert_steps(robot, expert, SEED0 + e, MAX_STEPS)):
                last = action if action is not None else last
                a = np.asarray(last, np.float32)
                writer.add_step({**obs, "action": a, "base_action": a, "residual": np.zeros(n, np.float32),
                                 "reward": float(success), "intervention": False, "stamp": 1000.0 * e + 0.1 * t,
                                 "chunk_phase": np.int16(-1)})
            writer.commit(success=success, health={"ok": True})
            results.append(success)
    writer.close()
    store.close()
    return results


TINY_MODEL = {"head_hidden": 32, "encoder": {"image_size": 32, "conv_channels": 8, "image_features": 16,
                                             "random_shift": 2, "low_dim_hidden": 32, "low_dim_features": 16}}
TINY_TRAIN = {"steps": 600, "batch_size": 32, "eval_every": 50, "patience": 6, "test_fraction": 0.3, "seed": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reward")
    store = root / "sim.zarr"
    labels = collect(store, EPISODES)
    assert 8 <= sum(labels) <= EPISODES - 8, labels  # both labels, plenty of each
    result = train_reward(store, PROFILE, root / "clf", model_cfg=from_dict(RewardModelConfig, TINY_MODEL),
                          cfg=from_dict(RewardTrainConfig, TINY_TRAIN), log=lambda s: None)
    return {"store": store, "dir": root / "clf", "result": result, "labels": labels}


# ---- rules (no training) ----------------------------------------------------------------------

def test_labels_detector_and_episode_scoring():
    assert frame_labels(5, True, 2).tolist() == [False, False, False, True, True]
    assert not frame_labels(5, False, 2).any()
    rng = np.random.default_rng(0)
    for _ in range(50):  # the streaming detector and the offline rule agree
        p = rng.uniform(size=30)
        d = SuccessDetector(0.7, 3)
        fired = [d.update(x) for x in p]
        fire = first_fire(p, 0.7, 3)
        assert (fire is None and not any(fired)) or (fired.index(True) == fire)
    d = SuccessDetector(0.5, 2)
    assert [d.update(x) for x in (0.9, None, 0.9, 0.9, 0.1)] == [False, False, False, True, True]  # None breaks a run
    ok, early, fail = np.r_[np.zeros(10), 0.9, 0.9], np.r_[0.9, 0.9, np.zeros(10)], np.r_[np.zeros(8), 0.9, 0.9]
    m = episode_metrics([ok, early, fail], [True, True, False], 0.5, 2, positive_window=2, on_time_slack=1)
    assert (m["tp"], m["early"], m["fp"], m["fn"]) == (1, 1, 1, 0)  # a fire long before the end is a false positive
    assert m["precision"] == pytest.approx(1 / 3, abs=1e-3) and m["recall"] == pytest.approx(0.5)


def test_episode_manager_params():
    with pytest.raises(ConfigError, match="reward_checkpoint"):
        from_dict(EpisodeManagerParams, {"label": "classifier"})
    assert from_dict(EpisodeManagerParams, {"label": "classifier", "reward_checkpoint": "runs/r"}).label == "classifier"


# ---- training on a real store -----------------------------------------------------------------

def test_classifier_learns_success_on_held_out_episodes(trained):
    m = trained["result"].metrics
    splits = [set(m[s]["episodes"]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    ep, fr = m["test"]["episode"], m["test"]["frame"]
    n = ep["successful"] + ep["failed"]
    chance = max(ep["successful"], ep["failed"]) / n  # always answering the majority label
    assert n >= 10 and min(ep["successful"], ep["failed"]) >= 3
    # Near-misses (cube released 2-3 cm off the goal) look almost like successes, and a dozen
    # training successes are little, so the bar is loose; chance is 0.5 for both AUCs.
    assert ep["roc_auc"] >= 0.7, m["test"]  # successful episodes rank above failed ones
    assert fr["roc_auc"] >= 0.85, m["test"]  # positive frames rank above negative ones
    assert ep["accuracy"] >= chance and ep["tp"] >= 2, m["test"]
    assert (trained["dir"] / "metrics.json").is_file()
    assert "per episode" in trained["result"].table()


def test_checkpoint_round_trip(trained):
    d = trained["dir"]
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]  # no pickle
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["profile"] == "sim" and cfg["joint_names"] == PROFILE.robot.joint_names
    assert cfg["obs"]["obs/camera_wrist"] == {"shape": [128, 128, 3], "dtype": "uint8"}
    assert "obs/joint_vel" not in cfg["obs"] and "obs/tactile_left_finger" in cfg["obs"]
    norm = cfg["normalizer"]  # the policies' Normalizer format: joints min-max, taxel grids mean/std
    assert sorted(norm) == ["obs/joint_pos", "obs/tactile_left_finger", "obs/tactile_right_finger"]
    assert norm["obs/joint_pos"]["mode"] == "minmax" and norm["obs/tactile_left_finger"]["mode"] == "meanstd"
    clf = load_classifier(d, PROFILE)
    m = trained["result"].metrics
    assert (clf.threshold, clf.consecutive) == (m["detector"]["threshold"], m["detector"]["consecutive"])
    from robot_rl.data.store import Store

    ep = Store.open(trained["store"]).read_episode(m["test"]["episodes"][0], clf.obs_keys)
    batch = clf.probabilities(ep)
    assert batch.shape == (len(ep["obs/joint_pos"]),) and np.all((batch >= 0) & (batch <= 1))
    assert clf.probability({k: v[-1] for k, v in ep.items()}) == pytest.approx(float(batch[-1]), abs=1e-6)
    again = load_classifier(d, PROFILE)
    np.testing.assert_array_equal(again.probabilities(ep), batch)
    with pytest.raises(ValueError, match="obs/camera_front"):
        clf.probability({**{k: v[-1] for k, v in ep.items()}, "obs/camera_front": np.zeros((64, 64, 3), np.uint8)})


def _variant(**change):
    p = copy.deepcopy(PROFILE)
    for k, v in change.items():
        if k == "camera_width":
            p.cameras[0].width = v
        elif k == "extra_joint":
            p.robot.joints.append(copy.deepcopy(p.robot.joints[0]))
            p.robot.joints[-1].name = "extra"
        else:
            setattr(p, k, v)
    return p


@pytest.mark.parametrize("change, names", [
    ({"camera_width": 160}, ["obs/camera_front", "128x128x3", "128x160x3"]),
    ({"extra_joint": True}, ["robot.joints", "extra", "obs/joint_pos"]),
    ({"name": "koch_real"}, ["profile", "'sim'", "koch_real"]),
])
def test_classifier_for_another_setup_is_refused(trained, change, names):
    with pytest.raises(RewardClassifierError) as e:
        load_classifier(trained["dir"], _variant(**change))
    msg = str(e.value)
    assert all(n in msg for n in names), msg
    assert "robot-rl train-reward --profile" in msg and "\n" not in msg


def test_not_a_classifier_is_refused(tmp_path):
    ckpt = tiny_checkpoints(tmp_path, PROFILE)["bc"]  # a policy checkpoint is not a reward classifier
    with pytest.raises(RewardClassifierError, match="not a reward classifier"):
        load_classifier(ckpt, PROFILE)
    with pytest.raises(RewardClassifierError, match="train-reward"):
        load_classifier(tmp_path / "nothing", PROFILE)


# ---- CLI --------------------------------------------------------------------------------------

def _cli(args, capsys):
    from robot_rl.cli.main import main

    code = main(["train-reward", "--no-progress", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_bad_inputs_exit_2_before_training(tmp_path, trained, capsys):
    one_label = tmp_path / "one_label.zarr"
    write_episodes(PROFILE, one_label, "demo", 1)  # episode 0 succeeds: no failure at all
    few = tmp_path / "few.zarr"
    write_episodes(PROFILE, few, "demo", 4)  # 2 successful, 2 failed
    cases = [
        ([ "--store", one_label, "--out", tmp_path / "a"], "no failed episode"),
        (["--store", few, "--out", tmp_path / "b"], "too few episodes"),
        (["--store", tmp_path / "missing.zarr", "--out", tmp_path / "c"], "does not exist"),
        (["--store", trained["store"], "--out", trained["dir"]], "already exists"),
        (["--store", trained["store"], "--out", tmp_path / "d", "--consecutive", "5"], "--consecutive"),
        (["--store", trained["store"], "--out", tmp_path / "e", "--obs-keys", "obs/camera_top"], "obs/camera_top"),
        (["--store", trained["store"], "--out", tmp_path / "f", "--sources", "rollout"], "no episode of source"),
    ]
    for args, needle in cases:
        code, err = _cli(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("robot-rl: error:") and needle in err and len(err.splitlines()) == 1, err
    assert not any((tmp_path / x).exists() for x in "abcdef")


# ---- the session loop (no ROS) ----------------------------------------------------------------

class Backend:
    """SessionBackend standing in for the ROS services; the policy's steps come from `on_enable`."""

    def __init__(self, on_enable):
        self.calls, self.episode, self.on_enable = [], 0, on_enable

    def reset(self):
        self.episode += 1
        self.calls.append("reset")
        return {"episode": self.episode}

    def start_recording(self):
        self.calls.append("start")

    def set_policy(self, enabled):
        self.calls.append(f"policy={enabled}")
        if enabled:
            threading.Thread(target=self.on_enable, args=(self.episode,), daemon=True).start()

    def commit(self, success):
        self.calls.append(f"commit={success}")
        return {"index": self.episode - 1, "health": {"ok": True}}

    def discard(self):
        self.calls.append("discard")


def wait_for_stop(backend, timeout=10.0):
    """The robot keeps still until the session has stopped the policy (no step races the end)."""
    end = time.monotonic() + timeout
    while "policy=False" not in backend.calls and time.monotonic() < end:
        time.sleep(0.002)


def test_session_ends_the_episode_when_the_detector_fires():
    probs = [0.1, 0.9, 0.2, 0.8, 0.95, 0.97, 0.99]  # fires at the 5th step (2 consecutive >= 0.7)
    session = None

    def steps(episode):
        for i, p in enumerate(probs):
            session.step(i >= 5, episode, reward=p)  # the sim's ground truth says success from step 6
            if session.detector.fired:
                return wait_for_stop(backend)
            time.sleep(0.01)

    backend = Backend(steps)
    session = EpisodeSession(backend, max_steps=50, label="classifier", reset="auto", step_timeout_s=5,
                             detector=SuccessDetector(0.7, 2))
    r = session.run_episode()
    assert r["success"] and r["classifier_step"] == 5 and r["steps"] == 5
    assert r["sim_success"] is False and r["agree"] is False  # ended before the sim's success
    assert backend.calls[-1] == "commit=True" and session.stats.agreement() == 0.0
    with pytest.raises(ValueError, match="detector"):
        EpisodeSession(backend, max_steps=5, label="classifier", reset="auto", step_timeout_s=5)


def test_session_with_the_trained_classifier_on_the_sim(trained):
    """The in-process sim stands in for the robot: each control step the backend evaluates the real
    classifier on the rendered observation; the session ends the episode when it fires."""
    from robot_rl.data.store import Store
    from robot_rl.sim import ScriptedExpert, SimRobot

    clf = load_classifier(trained["dir"], PROFILE)
    store = Store.open(trained["store"])
    fires = {}
    for i in trained["result"].metrics["test"]["episodes"]:  # a held-out success the classifier fires on
        if trained["labels"][i]:
            p = clf.probabilities(store.read_episode(i, clf.obs_keys))
            fire = first_fire(p, clf.threshold, clf.consecutive)
            if fire is not None and fire >= len(p) - clf.positive_window - 3:
                fires[i] = fire
    assert fires, "the classifier fires on none of the held-out successes"
    episode, fire = next(iter(fires.items()))
    backend = Backend(lambda ep: None)
    session = EpisodeSession(backend, max_steps=MAX_STEPS + 5, label="classifier", reset="auto", step_timeout_s=10,
                             detector=clf.detector())
    out = {}
    loop = threading.Thread(target=lambda: out.update(session.run_episode()), daemon=True)
    with SimRobot(PROFILE, seed=SEED0, render=True) as robot:  # rendered in this thread (its EGL context)
        expert = ScriptedExpert(PROFILE, seed=SEED0, noise=NOISE)
        loop.start()
        while "policy=True" not in backend.calls:
            time.sleep(0.002)
        for obs, action, success in expert_steps(robot, expert, SEED0 + episode, MAX_STEPS):
            session.step(robot.success(), backend.episode, reward=clf.probability(obs))
            if session.detector.fired:
                wait_for_stop(backend)
                break
    loop.join(10)
    r = out
    assert r["success"] and r["classifier_step"] == fire + 1 and r["steps"] == fire + 1, (r, fire)
    assert "sim_success" in r and r["agree"] == r["sim_success"]
    assert backend.calls[-1] == "commit=True"


# ---- the episode manager node through ROS -----------------------------------------------------

@pytest.mark.timeout(120)
def test_node_refuses_a_classifier_of_another_setup(trained, tmp_path, ros_domain):
    from robot_rl.ros.graph import GraphRunner

    data = yaml.safe_load(open(PROFILE.source))
    data["cameras"][0]["width"] = 160
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    runner = GraphRunner(load_profile(str(other)), mode="finetune", only=["episode_manager"], out=None,
                         overrides={"episode_manager": {"label": "classifier",
                                                        "reward_checkpoint": str(trained["dir"])}}).start()
    runner.wait(60)
    log = runner.log("episode_manager")
    assert runner.first_exit is not None and runner.first_exit[1] == 2, log
    assert "reward_checkpoint" in log and "obs/camera_front" in log and "Traceback" not in log, log


@pytest.mark.timeout(180)
def test_episode_manager_labels_with_the_classifier_through_ros(trained, tmp_path, probe):
    """sim (lockstep) + tiny BC policy + rollout recorder + episode manager labelling with the
    classifier: episodes end, episode_done carries both the classifier's and the sim's label."""
    from std_msgs.msg import String

    from robot_rl.data.store import Store
    from robot_rl.ros import qos, topics
    from robot_rl.ros.graph import GraphRunner

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "rollouts.zarr"
    probe.watch(topics.EPISODE_EVENTS, String, qos.RELIABLE)
    overrides = {"sim_robot": {"clock": "lockstep", "episode_steps": "12"},
                 "policy": {"checkpoint": str(base), "tick": "observation"},
                 "rollout_recorder": {"store": str(store), "mode": "rollout", "base_checkpoint": str(base)},
                 "episode_manager": {"label": "classifier", "reward_checkpoint": str(trained["dir"]),
                                     "episodes": "2", "max_steps": "12", "await_listeners": "1"}}
    runner = GraphRunner(PROFILE, mode="finetune", only=["sim_robot", "policy", "rollout_recorder", "episode_manager"],
                         out=None, overrides=overrides).start()
    try:
        def events(kind):
            return [e for e in (json.loads(a.msg.data) for a in probe.arrivals[topics.EPISODE_EVENTS])
                    if e["event"] == kind]
        ok = probe.wait_for(lambda: events("session_done") or runner.first_exit is not None, 150)
        logs = "\n".join(f"--- {name}:\n{runner.log(name)[-1500:]}"
                         for name in ("episode_manager", "policy", "rollout_recorder", "sim_robot"))
        seen = [json.loads(a.msg.data)["event"] for a in probe.arrivals[topics.EPISODE_EVENTS]]
        assert ok and events("session_done"), f"exit {runner.first_exit}, events {seen}\n{logs}"
        done = events("episode_done")
        assert len(done) == 2, done
        for e in done:
            assert e["label"] == "classifier" and e["reward_max"] is not None, e
            # the time-out is 12 steps, exactly: the sim refuses a command still in flight past its budget
            assert 1 <= e["steps"] <= 12 and e["success"] == (e["classifier_step"] is not None), e
            assert isinstance(e["sim_success"], bool) and e["agree"] == (e["sim_success"] == e["success"]), e
        assert "classifier_agreement" in events("session_done")[0]
    finally:
        assert runner.stop() == 0
    meta = Store.open(store).episodes_meta()
    assert [m["success"] for m in meta] == [e["success"] for e in done]


def test_finetune_refuses_a_classifier_of_another_setup_before_starting(trained, tmp_path, capsys):
    from robot_rl.cli.main import main

    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    store = tmp_path / "demos.zarr"
    write_episodes(PROFILE, store, "demo", 2)
    data = yaml.safe_load(open(PROFILE.source))
    data["name"] = "sim_b"  # the same robot under another setup name: the base fits, the classifier does not
    other = tmp_path / "sim_b.yaml"
    other.write_text(yaml.safe_dump(data))
    code = main(["finetune", "--profile", str(other), "--base", str(base), "--store", str(store), "--preset", "tiny",
                 "--episodes", "1", "--reward", str(trained["dir"]), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit profile sim_b" in err and "train-reward" in err, err
    assert not (tmp_path / "run" / "graph.log").exists()
