"""Chunk-level residual decisions (decision: chunk): the hold rule while acting and over a recorded
episode agree, episodes become one transition per chunk with the right residual, reward and
discount, the feeder and the policy-side runner use them, and step/chunk weights never mix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.data.store import Store
from robot_rl.rl import StoreFeeder, agent_from_store, export_actor_weights, make_buffers, n_step_returns, preset
from robot_rl.data.schema import KeySpec
from robot_rl.rl.decisions import ChunkHold, chunk_phases, decision_starts, episode_transitions
from robot_rl.rl.relabel import relabel_episodes, run_base
from test_rl_core import SPEC, STORE_ATTRS, STORE_KEYS, CountingBase, add_episode, random_obs


def test_hold_rule_and_recorded_starts_agree():
    phase = [0, 1, 2, 0, 1, 1, 2, 5, 0, 3]  # a new chunk at 0, and wherever the phase does not advance
    hold, drawn, values = ChunkHold(), iter(range(100)), []
    for p in phase:
        values.append(hold.at(p, lambda: next(drawn)))
    assert values == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert decision_starts(phase).tolist() == [0, 3, 5, 8]
    assert decision_starts(np.zeros(0)).tolist() == []
    hold.release()  # a human drove meanwhile: the next tick decides afresh, even mid-chunk
    assert hold.at(4, lambda: next(drawn)) == 4 and hold.at(5, lambda: next(drawn)) == 4


def test_n_step_returns_discount_by_ticks_per_decision():
    g = 0.9
    # three decisions of 8, 8 and 3 ticks; success inside the last one
    ret, disc, nxt, valid = n_step_returns(np.array([0, 0, 0.5]), terminal=True, n=2, gamma=g,
                                           steps=np.array([8, 8, 3]))
    np.testing.assert_allclose(ret, [0, g ** 8 * 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(disc, [g ** 16, 0, 0], rtol=1e-6)
    assert nxt.tolist() == [2, 1, 2] and valid.all()  # done: no next observation (its own index)
    # steps of 1 are the per-tick returns
    a = n_step_returns(np.array([0, 0.25, 0, 1.0]), terminal=False, n=3, gamma=g, steps=np.ones(4))
    b = n_step_returns(np.array([0, 0.25, 0, 1.0]), terminal=False, n=3, gamma=g)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_episode_becomes_one_transition_per_chunk():
    T, H, g, scale = 7, 3, 0.9, 0.1
    rng = np.random.default_rng(0)
    obs = {"obs/x": np.arange(T, dtype=np.float32)[:, None]}
    base = rng.uniform(-0.5, 0.5, (T, 2)).astype(np.float32)
    offsets = np.array([[0.05, -0.02], [0.3, 0.0], [-0.01, 0.2]], np.float32)  # one per chunk
    action = base + np.repeat(offsets, H, axis=0)[:T]
    action[1] += [0.03, 0.0]  # a human's uneven deviation inside the first chunk
    reward = np.zeros(T, np.float32)
    reward[-1] = 1.0
    out = episode_transitions("chunk", obs, base, action, reward, np.arange(T) % H, action_scale=scale,
                              project=True, gamma=g)
    assert out["obs"]["obs/x"][:, 0].tolist() == [0, 3, 6]  # the chunk's first tick
    np.testing.assert_array_equal(out["base_action"], base[[0, 3, 6]])
    taken = out["action"] - out["base_action"]
    np.testing.assert_allclose(taken[0], [0.06, -0.02], atol=1e-6)  # the mean deviation over the chunk
    np.testing.assert_allclose(taken[1], [0.1, 0.0], atol=1e-6)  # projected into +- action_scale
    np.testing.assert_allclose(taken[2], [-0.01, 0.1], atol=1e-6)
    assert out["steps"].tolist() == [3, 3, 1] and out["phase"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(out["reward"], [0, 0, 1])
    late = episode_transitions("chunk", obs, base, action, np.eye(T, dtype=np.float32)[4], np.arange(T) % H,
                               action_scale=scale, project=True, gamma=g)
    np.testing.assert_allclose(late["reward"], [0, g, 0], rtol=1e-6)  # discounted inside its chunk
    per_tick = episode_transitions("step", obs, base, action, reward, np.arange(T) % H, action_scale=scale,
                                   project=True, gamma=g)
    assert len(per_tick["reward"]) == T and "steps" not in per_tick
    np.testing.assert_allclose(per_tick["action"], np.clip(action, base - scale, base + scale))
    with pytest.raises(ValueError, match="step|chunk"):
        episode_transitions("tick", obs, base, action, reward, np.arange(T), action_scale=scale, project=True, gamma=g)


def test_feeder_builds_chunk_decisions_from_the_store(tmp_path):
    rng = np.random.default_rng(3)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    add_episode(store, rng, 7, "demo", True)
    add_episode(store, rng, 8, "rollout", False)
    cfg = preset("tiny", chunk_length=3, decision="chunk", n_step=2)
    agent = agent_from_store(store, cfg, device="cpu")
    online, demo = make_buffers(agent)
    res = StoreFeeder(store, agent, online, demo, base_action_fn=CountingBase(), base_hash="h1").poll()
    assert res.env_steps == 8  # the UTD ratio still counts control ticks
    assert (demo.steps_added, online.steps_added) == (3, 3)  # decisions at ticks 0, 3, 6
    assert len(demo) == 3 and len(online) == 2  # a time-out's last decision has no next one
    g3 = cfg.gamma ** 3
    np.testing.assert_allclose(demo.discount[:3].numpy(), [g3 * g3, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(online.discount[:2].numpy(), [g3 * g3, g3], rtol=1e-5)
    ep = store.read_episode(1)
    norm = agent.policy.action_norm
    np.testing.assert_allclose(online.base[:3].numpy(), norm.normalize_np(ep["base_action"][[0, 3, 6]]), rtol=1e-5)
    np.testing.assert_allclose(online.obs["obs/joint_pos"][:3].numpy(), ep["obs/joint_pos"][[0, 3, 6]])


def test_recorded_chunk_phases_cut_rollouts_where_the_policy_node_did(tmp_path):
    """In real time a late chunk skips its first actions and a new chunk may start early: the recorded
    `chunk_phase` says where each decision began, for transitions and for the held base features.
    Demos (phase -1) and stores without the key keep chunks back to back from the episode start."""
    assert chunk_phases(None, 5, 3).tolist() == [0, 1, 2, 0, 1]
    assert chunk_phases(np.full(4, -1), 4, 3).tolist() == [0, 1, 2, 0]
    realtime = np.array([0, 1, 2, 1, 2, 0, 1, 2])  # tick 3: the next chunk arrived late, from its phase 1
    assert chunk_phases(realtime, 8, 3).tolist() == realtime.tolist()

    rng = np.random.default_rng(5)
    keys = {**STORE_KEYS, "chunk_phase": KeySpec((), "int16")}
    store = Store.create(tmp_path / "p.zarr", keys=keys, attrs=STORE_ATTRS, durable=False)
    add_with_phase(store, rng, np.full(7, -1, np.int16), "demo")
    add_with_phase(store, rng, realtime.astype(np.int16), "rollout")
    cfg = preset("tiny", chunk_length=3, decision="chunk", n_step=1)
    agent = agent_from_store(store, cfg, device="cpu")
    online, demo = make_buffers(agent)
    StoreFeeder(store, agent, online, demo, base_action_fn=CountingBase(), base_hash="h1").poll()
    assert demo.steps_added == 3 and online.steps_added == 3  # demo: 0, 3, 6; rollout: 0, 3, 5
    ep = store.read_episode(1)
    np.testing.assert_allclose(online.obs["obs/joint_pos"][:3].numpy(), ep["obs/joint_pos"][[0, 3, 5]])
    g = cfg.gamma
    np.testing.assert_allclose(online.discount[:1].numpy(), [g ** 3], rtol=1e-5)  # n_step 1: one decision

    step = agent_from_store(store, preset("tiny", chunk_length=3), device="cpu")
    online, demo = make_buffers(step)
    StoreFeeder(store, step, online, demo, base_action_fn=CountingBase(), base_hash="h1").poll()
    assert online.phase[:8].tolist() == realtime.tolist()  # the per-tick residual's phase input as acted on
    assert demo.phase[:7].tolist() == [0, 1, 2, 0, 1, 2, 0]

    frames = {"obs/x": np.arange(8, dtype=np.float32)[:, None]}
    held, calls, _ = run_base(frames, lambda o: o["obs/x"] * 10, chunk_length=3, hold=True, phase=realtime)
    assert held[:, 0].tolist() == [0, 0, 0, 30, 30, 50, 50, 50] and calls == 3
    with pytest.raises(ValueError, match="uncached"):  # the cache is keyed without phases
        relabel_episodes(store, [1], CountingBase(), "h1", hold=True, phases={1: realtime})


def add_with_phase(store, rng, phase, source):
    T = len(phase)
    data = random_obs(rng, T, SPEC)
    data["obs/depth_wrist"] = np.zeros((T, 24, 24), np.uint16)
    data["action"] = rng.uniform(-1, 1, (T, 3)).astype(np.float32)
    data["base_action"] = data["action"] + 0.1
    data["residual"] = np.full((T, 3), -0.1, np.float32)
    data["reward"] = np.zeros(T, np.float32)
    data["intervention"] = np.zeros(T, bool)
    data["stamp"] = np.arange(T) / 10.0
    data["chunk_phase"] = phase
    return store.append_episode(data, source=source, success=source == "demo", start_time=float(store.n_episodes),
                                health={})


def test_runner_holds_the_residual_and_refuses_per_tick_weights(tmp_path):
    """The policy side: one residual per chunk (computed at its first tick, noise included); weights
    of the other decision kind are rejected by the architecture check."""
    from robot_rl.config import load_profile
    from robot_rl.control.residual import ResidualRunner
    from policy_fixtures import write_episodes

    PROFILE = load_profile("sim")
    write_episodes(PROFILE, tmp_path / "store.zarr", "demo", 1)
    store = Store.open(tmp_path / "store.zarr")
    (tmp_path / "rl.yaml").write_text("preset: tiny\ndecision: chunk\n")
    chunked = agent_from_store(store, preset("tiny", chunk_length=3, decision="chunk"))
    runner = ResidualRunner(PROFILE, 3, "tiny", rl_config=str(tmp_path / "rl.yaml"))
    assert not runner.offer(*export_actor_weights(agent_from_store(store, preset("tiny", chunk_length=3))))
    assert "decision" in runner.counters.last_reject_reason
    torch.nn.init.normal_(chunked.policy.actor.head.weight, std=0.5)  # a residual that depends on the obs
    assert runner.offer(*export_actor_weights(chunked))
    ep = store.read_episode(0)
    obs = [{k: ep[k][t] for k in chunked.obs_spec} for t in range(6)]
    base = [ep["action"][t].astype(np.float64) for t in range(6)]
    out = [runner.apply(obs[t], base[t], t % 3, explore=True) for t in range(6)]
    assert np.abs(out[0]).max() > 0
    assert all(np.array_equal(out[0], o) for o in out[1:3]) and not np.array_equal(out[2], out[3])
    assert all(np.array_equal(out[3], o) for o in out[4:6])
    step = ResidualRunner(PROFILE, 3, "tiny")
    assert not step.offer(*export_actor_weights(chunked)) and "decision" in step.counters.last_reject_reason
