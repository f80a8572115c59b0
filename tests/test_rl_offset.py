"""decision: offset (rl/offset.py): the tcp offset becomes the joint motion the kinematics promise (checked
against real MuJoCo), the gate opens, decides every N ticks and freezes, the learner recovers from a
recorded episode exactly the decisions the policy side took, and the runner and feeder use them."""
from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robot_rl.config import ConfigError, load_profile
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import open_or_create, store_layout
from robot_rl.data.store import Store
from robot_rl.rl import StoreFeeder, agent_from_store, export_actor_weights, make_buffers, preset
from robot_rl.rl.config import OffsetConfig
from robot_rl.rl.offset import GatedOffset, OffsetSpace, offset_transitions
from policy_fixtures import write_episodes

PROFILE = load_profile("sim")
GRIP = 5  # the sim's gripper joint: the default gate


def carrying_base(T=30, closed=(6, 22), seed=0):
    """Base commands of one pick-and-place-like episode: the gripper command closed on [closed)."""
    rng = np.random.default_rng(seed)
    base = np.tile([0.1, 0.4, 0.9, 1.2, 0.0, 0.04], (T, 1)) + rng.normal(0, 0.05, (T, 6)) * [1, 1, 1, 1, 1, 0]
    base[closed[0]:closed[1], GRIP] = 0.0
    return base


def test_tcp_offset_jacobian_matches_mujoco_and_moves_the_tcp_as_asked():
    from robot_rl.sim import SimRobot

    space = OffsetSpace(OffsetConfig(), PROFILE)
    assert space.dim == 2 and space.joints.tolist() == [0, 1, 2, 3, 4] and space.frame == "tcp"
    q = np.array([0.3, 0.5, 0.8, 1.1, 0.2, 0.02])
    with SimRobot(PROFILE, seed=0, render=False) as robot:
        m, d = robot.model, robot.data
        for i, j in enumerate(robot._vadr[:6]):
            d.qpos[m.jnt_qposadr[m.dof_jntid[j]]] = q[i]
        mujoco.mj_forward(m, d)
        jacp = np.zeros((3, m.nv))
        mujoco.mj_jacSite(m, d, jacp, None, m.site("tcp").id)
        np.testing.assert_allclose(space.jacobian(q), jacp[:, robot._vadr[:5]], atol=1e-5)
    offset = np.array([0.01, -0.02])
    dq = space.to_joints(offset, q)
    assert dq[GRIP] == 0 and np.abs(dq).max() > 0
    np.testing.assert_allclose(space.from_joints(dq, q), offset, atol=1e-9)
    small = space.to_joints(offset / 5, q)  # the map is first order: mm off over 2 cm, 0.1 mm over 4 mm
    moved = space.fk.frame(q + small, "tcp")[:3, 3] - space.fk.frame(q, "tcp")[:3, 3]
    np.testing.assert_allclose(moved, [0.002, -0.004, 0.0], atol=2e-4)
    assert not space.to_joints(np.zeros(2), q).any()


def test_joint_space_and_config_errors():
    space = OffsetSpace(OffsetConfig(space="joint", joints=["waist", "elbow"], range=0.1), PROFILE)
    assert space.dim == 2
    np.testing.assert_array_equal(space.to_joints([0.05, -0.02], np.zeros(6)), [0.05, 0, -0.02, 0, 0, 0])
    with pytest.raises(ConfigError, match="gate joint 'hand'") as e:
        OffsetSpace(OffsetConfig(gate_joint="hand"), PROFILE)
    assert e.value.field == "offset.gate_joint"
    with pytest.raises(ConfigError, match="knee"):
        OffsetSpace(OffsetConfig(space="joint", joints=["knee"]), PROFILE)
    with pytest.raises(ConfigError, match="not a frame"):
        OffsetSpace(OffsetConfig(frame="elbow_link"), PROFILE)
    with pytest.raises(ConfigError, match="demo_fraction"):
        preset("tiny", decision="offset")  # demos have no offset decisions
    with pytest.raises(ConfigError, match="every"):
        preset("tiny", decision="offset", demo_fraction=0.0, offset={"every": 0})
    cfg = preset("cpu_offset")
    assert cfg.decision == "offset" and cfg.utd == 0.4 and cfg.offset.range == 0.07


def test_gate_decides_every_n_open_ticks_and_freezes_after_the_release():
    space = OffsetSpace(OffsetConfig(every=3), PROFILE)
    gated, base = GatedOffset(space), carrying_base()
    due, residuals = [], []
    for t, b in enumerate(base):
        if gated.tick(b):
            due.append(t)
            gated.set([0.001 * t, 0.1])  # beyond the range: clipped
        residuals.append(gated.residual(b))
    assert due == [6, 9, 12, 15, 18, 21]
    assert not np.any(residuals[:6])  # zero before the gate opens
    assert gated.offset.tolist() == [0.021, 0.04]
    final = space.to_joints(gated.offset, base[29])
    np.testing.assert_allclose(residuals[29], final)  # frozen: the last offset after the release...
    assert not gated.tick(np.r_[base[0, :5], 0.0])  # ...even when the gripper closes again
    gated.reset()
    assert gated.state == "before" and not gated.offset.any()


def test_recorded_episode_gives_back_the_decisions_taken():
    space, g, scale = OffsetSpace(OffsetConfig(every=4), PROFILE), 0.9, 0.5
    base = carrying_base(T=30, closed=(5, 20))
    gated, chosen, action = GatedOffset(space), [], []
    rng = np.random.default_rng(1)
    for b in base:
        if gated.tick(b):
            prev = gated.offset / space.range
            gated.set((prev + rng.uniform(-scale, scale, 2)) * space.range)
            chosen.append(gated.offset / space.range)
        action.append(b + gated.residual(b))
    obs = {"obs/t": np.arange(30, dtype=np.float32)[:, None]}
    out = offset_transitions(space, obs, base, np.array(action), True, action_scale=scale, gamma=g)
    assert out["obs"]["obs/t"][:, 0].tolist() == [5, 9, 13, 17]
    np.testing.assert_allclose(out["action"], chosen, atol=1e-6)
    np.testing.assert_allclose(out["base_action"], np.concatenate([np.zeros((1, 2)), chosen[:-1]]), atol=1e-6)
    assert out["steps"].tolist() == [4, 4, 4, 1]
    np.testing.assert_allclose(out["reward"], [0, 0, 0, g ** 12], rtol=1e-6)  # ticks 17..29 to the success
    failed = offset_transitions(space, obs, base, np.array(action), False, action_scale=0.1, gamma=g)
    assert not failed["reward"].any()
    assert np.abs(np.diff(np.concatenate([np.zeros((1, 2)), failed["action"]]), axis=0)).max() <= 0.1 + 1e-6
    never = base.copy()
    never[:, GRIP] = 0.04
    assert offset_transitions(space, obs, never, never, True, action_scale=scale, gamma=g) is None


def write_rollout(path, base: np.ndarray, action: np.ndarray, success: bool) -> None:
    keys, _ = store_layout(PROFILE)
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(open_or_create(path, PROFILE), background=False)
    writer.begin(source="rollout")
    for t in range(len(base)):
        step = {k: (rng.integers(0, 255, s.shape, dtype=np.uint8) if s.dtype == "uint8" else
                    np.zeros(s.shape, s.dtype)) for k, s in keys.items()}
        step.update(base_action=base[t].astype(np.float32), action=action[t].astype(np.float32),
                    residual=(action[t] - base[t]).astype(np.float32), stamp=100.0 + 0.1 * t,
                    chunk_phase=np.int16(t % 3))
        writer.add_step(step)
    writer.commit(success=success, health={"ok": True})
    writer.close()


def test_runner_and_feeder_agree_on_the_offset_decisions(tmp_path):
    """The policy side (zero residual: the base exactly; trained weights: a gated, frozen offset) and
    the learner's feeder (demos skipped, one transition per decision) on a real store."""
    from robot_rl.control.residual import ResidualRunner

    cfg = preset("tiny", chunk_length=3, decision="offset", demo_fraction=0.0, action_scale=0.5,
                 encoder={"use_cameras": False})
    path = tmp_path / "store.zarr"
    write_episodes(PROFILE, path, "demo", 2)
    space = OffsetSpace(cfg.offset, PROFILE)
    with pytest.raises(ValueError, match="offset space"):
        agent_from_store(Store.open(path), cfg)
    agent = agent_from_store(Store.open(path), cfg, offset_space=space)
    assert agent.arch["action_dim"] == 2 and agent.arch["offset"]["every"] == 4
    norm = agent.policy.action_norm  # normalised offset = offset / range, what offset_transitions stores
    assert norm.center.tolist() == [0, 0] and np.allclose(norm.half_range.numpy(), space.range)
    runner = ResidualRunner(PROFILE, 3, "", rl_config=_write_config(tmp_path, cfg))
    assert runner.offer(*export_actor_weights(agent))
    base = carrying_base()
    obs = {k: np.zeros(s.shape, np.float32) for k, s in agent.obs_spec.items()}
    assert not any(runner.apply(obs, b, t % 3, explore=False).any() for t, b in enumerate(base))  # step-0 parity
    with torch.no_grad():  # "trained": the actor's output layer pushes the offset's first coordinate up
        agent.policy.actor.head.bias[0] = 3.0
    agent.counters["critic_updates"] += 1  # a newer version
    runner.new_episode()
    assert runner.offer(*export_actor_weights(agent))
    residuals = [runner.apply(obs, b, t % 3, explore=False) for t, b in enumerate(base)]
    action = base + np.array(residuals)
    assert not np.any(residuals[:6]) and np.abs(residuals[6]).max() > 0
    np.testing.assert_allclose(runner.gated.offset, [space.range, 0.0], atol=1e-6)  # 4 decisions of +tanh(3) / 2
    write_rollout(path, base, action, success=True)
    online, demo = make_buffers(agent)
    fed = StoreFeeder(Store.open(path), agent, online, demo, offset_space=space).poll()
    assert fed.skipped == [0, 1] and fed.online_transitions == 4 and fed.env_steps == len(base)
    assert fed.demo_transitions == 0 and len(demo) == 0
    step = np.tanh(3.0) * 0.5
    taken = np.array([step, 2 * step, 1.0])  # the first coordinate after each decision (normalised, clipped)
    stored = online.sample(64)["action"].numpy()
    assert np.abs(stored[:, :1] - taken).min(axis=1).max() < 1e-4 and np.abs(stored[:, 1]).max() < 1e-4
    rejected = ResidualRunner(PROFILE, 3, "tiny")  # a per-tick runner refuses offset weights
    assert not rejected.offer(*export_actor_weights(agent))


def _write_config(tmp_path, cfg) -> str:
    import json

    from robot_rl.config.typed import to_dict

    path = tmp_path / "rl.json"
    path.write_text(json.dumps(to_dict(cfg)))
    return str(path)

