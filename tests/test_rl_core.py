"""Residual RL core: step-0 parity, ensemble target/actor objective against per-head references,
n-step returns, replay sampling, demo relabel cache, UTD throttle, exact resume, weight transfer."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

from robot_rl.config.typed import ConfigError
from robot_rl.data.schema import KeySpec
from robot_rl.data.store import Store
from robot_rl.rl import (
    ReplayBuffer, ResidualPolicy, ResidualTD3, StoreFeeder, WeightsRejected, agent_from_store, config_from_dict,
    export_actor_weights,
    ingest, load_actor_weights, load_checkpoint, load_config, make_buffers, n_step_returns, policy_from_weights,
    preset, relabel_episodes, sample_batch, save_checkpoint,
)
from robot_rl.rl import checkpoint
from robot_rl.rl.networks import (
    EnsembleLayerNormReLU, EnsembleLinear, _HeadTiledLayerNormReLU, architecture,
)
from robot_rl.rl.relabel import cache_path

N = 3  # action dims
SPEC = {"obs/joint_pos": KeySpec((N,), "float32"), "obs/tactile_tip": KeySpec((2, 2), "float32"),
        "obs/camera_wrist": KeySpec((24, 24, 3), "uint8")}
LOWDIM = {k: v for k, v in SPEC.items() if not k.startswith("obs/camera")}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: intra-op threads only contend
    yield
    torch.set_num_threads(n)


def tiny(**kw):
    return preset("tiny", **kw)


def make_agent(spec=SPEC, **kw) -> ResidualTD3:
    return ResidualTD3(tiny(**kw), spec, N, action_low=[-1.0, -2.0, 0.0], action_high=[1.0, 2.0, 0.5], device="cpu")


def random_obs(rng, T, spec=SPEC, image=24):
    out = {}
    for k, s in spec.items():
        if s.dtype == "uint8":
            out[k] = rng.integers(0, 256, (T, image, image, 3), dtype=np.uint8)
        else:
            out[k] = rng.normal(size=(T, *s.shape)).astype(np.float32)
    return out


def fill(buf: ReplayBuffer, rng, episodes=6, T=9, offset=0.0):
    for e in range(episodes):
        reward = np.zeros(T, np.float32)
        success = e % 2 == 0
        reward[-1] = float(success)
        obs = random_obs(rng, T, buf.obs_spec)
        obs["obs/joint_pos"] += offset
        buf.add_episode(obs, rng.uniform(-0.8, 0.8, (T, N)), rng.uniform(-1, 1, (T, N)), reward, terminal=success)


def buffer(agent, capacity=500):
    c = agent.cfg
    return ReplayBuffer(capacity, agent.obs_spec, N, n_step=c.n_step, gamma=c.gamma, chunk_length=c.chunk_length)


# ---- config -------------------------------------------------------------------------------------

def test_config_defaults_presets_and_errors(tmp_path):
    c = preset("recipe")
    assert (c.actor_hidden, c.actor_layers, c.critic_hidden, c.num_critics, c.target_subset) == (1024, 2, 1024, 10, 2)
    assert (c.action_scale, c.explore_std, c.target_noise, c.target_noise_clip, c.tau) == (0.1, 0.05, 0.2, 0.3, 0.005)
    assert (c.critic_lr, c.actor_lr, c.grad_clip, c.utd, c.actor_every) == (1e-4, 1e-6, 1.0, 4, 4)
    assert (c.n_step, c.gamma, c.weight_decay) == (3, 0.99, 0.01)
    assert (c.batch_size, c.demo_batch, c.warmup_env_steps, c.critic_warmup_updates) == (256, 128, 10_000, 10_000)
    small = preset("cpu_small")
    assert (small.critic_hidden, small.num_critics, small.batch_size) == (256, 4, 128)
    f = tmp_path / "rl.yaml"
    f.write_text("preset: cpu_small\nactor_lr: 3.0e-6\nencoder: {image_size: 48}\n")
    loaded = load_config(f)
    assert loaded.actor_lr == 3e-6 and loaded.encoder.image_size == 48 and loaded.encoder.conv_channels == 16
    f.write_text("actor_lr: 1e-6\ncritic_lr: 2E-4\n")  # YAML 1.1 reads these as strings; they are numbers
    assert (load_config(f).actor_lr, config_from_dict({"tau": "5e-3"}).tau) == (1e-6, 5e-3)
    f.write_text("actor_lr: 1e-6x\n")
    with pytest.raises(ConfigError, match="actor_lr: must be a number, got '1e-6x'"):
        load_config(f)
    f.write_text("preset: cpu_small\nencoder: {image_sise: 48}\n")
    with pytest.raises(ConfigError, match=r"rl.yaml: encoder.image_sise: unknown field \(did you mean 'image_size'"):
        load_config(f)
    with pytest.raises(ConfigError, match="target_subset"):
        preset("recipe", num_critics=1)
    with pytest.raises(ConfigError, match="preset: unknown preset 'gpu_huge'"):
        preset("gpu_huge")
    adapt = preset("cpu_adapt")  # a changed robot: the old robot's demos must not be sampled
    assert (adapt.demo_batch, adapt.decision, adapt.explore_hold, adapt.actor_loss) == (0, "chunk", "episode", "awac")
    assert adapt.encoder.base_features and not adapt.encoder.use_cameras


# ---- step-0 parity --------------------------------------------------------------------------------

def test_step0_residual_is_exactly_zero_and_action_is_the_base():
    agent = make_agent()
    rng = np.random.default_rng(0)
    obs = random_obs(rng, 16, image=40)  # raw camera size differs from the encoder's: resized inside
    base = torch.as_tensor(rng.uniform([-1, -2, 0], [1, 2, 0.5], (16, N)), dtype=torch.float32)
    phase = torch.arange(16)
    res = agent.act(agent.encode(obs), agent.policy.action_norm.normalize(base), phase, explore=False)
    assert torch.equal(res, torch.zeros_like(res))
    out = agent.policy_step(obs, base, phase, explore=False)
    assert torch.equal(out.action, base) and torch.equal(out.residual, torch.zeros_like(base))
    # exploration: uniform +-warmup_noise during the env warm-up, truncated Gaussian after
    warm = agent.act(agent.encode(obs), torch.zeros(16, N), phase, explore=True)
    assert 0 < warm.abs().max() <= agent.cfg.warmup_noise
    agent.record_env_steps(agent.cfg.warmup_env_steps)
    g = agent.act(agent.encode(obs), torch.zeros(16, N), phase, explore=True)
    assert 0 < g.abs().max() <= agent.cfg.explore_clip
    # the executed action never leaves the widened range
    big = agent.policy.action_norm.combine(base, torch.full_like(base, 5.0))
    norm = agent.policy.action_norm
    torch.testing.assert_close(big, (norm.center + norm.half_range).expand_as(big))


# ---- critic ensemble vs per-head modules ------------------------------------------------------------

def per_head_modules(ens) -> list[nn.Sequential]:
    """Explicit nn.Linear/nn.LayerNorm/nn.ReLU modules per head holding the ensemble's weights."""
    heads = []
    for h in range(ens.heads):
        mods = []
        for layer in ens.net:
            if isinstance(layer, EnsembleLinear):
                lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
                lin.weight.data.copy_(layer.weight[h].T)
                lin.bias.data.copy_(layer.bias[h, 0])
                mods.append(lin)
            else:
                assert isinstance(layer, EnsembleLayerNormReLU)
                ln = nn.LayerNorm(layer.weight.shape[-1])
                ln.weight.data.copy_(layer.weight[h, 0])
                ln.bias.data.copy_(layer.bias[h, 0])
                mods += [ln, nn.ReLU()]
        heads.append(nn.Sequential(*mods))
    return heads


@pytest.mark.parametrize("tiled", [True, False])
def test_batched_ensemble_matches_per_head_loop(tiled):
    agent = make_agent()
    ens = agent.critic
    with torch.no_grad():  # non-trivial LayerNorm affines
        for m in ens.net:
            if isinstance(m, EnsembleLayerNormReLU):
                m.tiled = tiled
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    torch.manual_seed(1)
    x = torch.randn(32, ens.in_dim, requires_grad=True)
    q = ens(x)
    heads = per_head_modules(ens)
    ref = torch.stack([m(x).squeeze(-1) for m in heads])
    assert q.shape == (ens.heads, 32)
    torch.testing.assert_close(q, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(q)
    g1 = torch.autograd.grad((q * upstream).sum(), [x, *ens.parameters()])
    g2 = torch.autograd.grad((ref * upstream).sum(), [x, *itertools.chain(*(m.parameters() for m in heads))])
    torch.testing.assert_close(g1[0], g2[0], rtol=1e-4, atol=1e-5)
    # per-head parameter gradients: ensemble tensor [h] == that head's module parameter
    per_head = [list(m.parameters()) for m in heads]
    for i, p in enumerate(ens.parameters()):
        for h in range(ens.heads):
            ref_g = per_head[h][i]
            got = g1[1 + i][h]
            got = got.T if got.dim() == 2 and got.shape[0] != 1 else got.reshape(ref_g.shape)
            torch.testing.assert_close(got, g2[1 + h * len(per_head[h]) + i].reshape(ref_g.shape),
                                       rtol=1e-4, atol=1e-5)


def test_tiled_layernorm_gradcheck():
    m = EnsembleLayerNormReLU(3, 5, tiled=True).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _HeadTiledLayerNormReLU.apply(x, w, b, 1e-5),
                                    (x, m.weight, m.bias))


def test_target_is_min_over_a_random_pair_and_actor_follows_the_mean():
    agent = make_agent(spec=LOWDIM, num_critics=4)
    with torch.no_grad():  # make the target networks differ from the online ones
        for p in agent.critic_target.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rng = np.random.default_rng(0)
    buf = buffer(agent)
    fill(buf, rng)
    b = sample_batch(buf, None, 64, 0.5, torch.Generator().manual_seed(0))
    next_feat = agent.policy.encoder(b["next_obs"])
    ref_target_heads = per_head_modules(agent.critic_target)
    gen = agent.generators["update"]
    pairs, differs_from_min_of_all = set(), False
    for _ in range(60):
        state = gen.get_state()
        target = agent.td_target(b, next_feat)
        replay = torch.Generator().set_state(state)
        # reference: same draws, explicit per-head modules
        next_res = agent.actor_target(agent.policy.actor_input(next_feat, b["next_base"], b["next_phase"]))
        noise = (torch.randn(next_res.shape, generator=replay) * agent.cfg.target_noise).clamp(-0.3, 0.3)
        act = (b["next_base"] + next_res + noise).clamp(-1, 1)
        x = agent._critic_input(next_feat, b["next_base"], b["next_phase"], act)
        q_heads = torch.stack([m(x).squeeze(-1) for m in ref_target_heads]).detach()
        pick = torch.randperm(4, generator=replay)[:2]
        pairs.add(tuple(sorted(pick.tolist())))
        expected = b["reward"] + b["discount"] * torch.minimum(q_heads[pick[0]], q_heads[pick[1]])
        torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6)
        differs_from_min_of_all |= not torch.allclose(target, b["reward"] + b["discount"] * q_heads.min(0).values)
    assert differs_from_min_of_all
    assert pairs == set(itertools.combinations(range(4), 2))  # every pair gets drawn
    # actor objective: mean over all heads of the online critic at clamp(base + residual)
    feat = agent.policy.encoder(b["obs"])
    loss, res = agent.actor_objective(feat, b["base"], b["phase"])
    x = agent._critic_input(feat, b["base"], b["phase"], (b["base"] + res).clamp(-1, 1))
    heads = torch.stack([m(x).squeeze(-1) for m in per_head_modules(agent.critic)])
    torch.testing.assert_close(loss, -heads.mean(), rtol=1e-5, atol=1e-6)
    # residual_pull: the per-sample norm of dQ/d(residual), Q averaged over the heads
    res = agent.policy.residual(feat, b["base"], b["phase"])
    q = agent.critic(agent._critic_input(feat, b["base"], b["phase"], (b["base"] + res).clamp(-1, 1))).mean(0)
    expected_pull = torch.autograd.grad(q.sum(), res)[0].norm(dim=1).mean()
    agent._actor_update(feat.detach(), b["base"], b["phase"])
    torch.testing.assert_close(agent.last_residual_pull, expected_pull, rtol=1e-4, atol=1e-7)
    loss, _ = agent.actor_objective(feat, b["base"], b["phase"])  # after the actor step
    x = agent._critic_input(feat, b["base"], b["phase"], (b["base"] + agent.policy.residual(feat, b["base"], b["phase"])).clamp(-1, 1))
    heads = torch.stack([m(x).squeeze(-1) for m in per_head_modules(agent.critic)])
    # a pessimistic actor: mean - k * std over the heads (per sample), k = actor_pessimism
    agent.cfg = agent.cfg.replace(actor_pessimism=0.5)
    loss, _ = agent.actor_objective(feat, b["base"], b["phase"])
    torch.testing.assert_close(loss, -(heads.mean(0) - 0.5 * heads.std(0)).mean(), rtol=1e-5, atol=1e-6)


class ActionOnlyCritic(nn.Module):
    """Q = -|action - (base + best)|^2 (the same for every head): a critic whose optimum is known."""

    def __init__(self, best: torch.Tensor, flat: bool = False):
        super().__init__()
        self.best, self.flat = best, flat

    def forward(self, x, heads=None):
        base, action = x[:, -2 * N - 8:-N - 8], x[:, -N:]  # [features, base, phase (8), action]
        q = torch.zeros(len(x)) if self.flat else -(action - base - self.best).pow(2).sum(1)
        return q.expand(4, -1)


@pytest.mark.parametrize("flat", [False, True])
def test_awac_actor_moves_toward_better_taken_actions_and_stays_on_the_data(flat):
    """actor_loss: awac regresses the residual onto the batch's actions weighted by their advantage:
    each state taken once at the critic's optimum (+0.05) and once at -0.05, the residual goes to
    ~+0.05; with a flat critic it goes to their mean (0), nowhere near the 0.1 bound."""
    agent = make_agent(spec=LOWDIM, actor_loss="awac", awac_beta=0.01, actor_lr=3e-3, action_scale=0.1, chunk_length=8)
    best = torch.full((N,), 0.05)
    agent.critic = ActionOnlyCritic(best, flat)
    rng = np.random.default_rng(0)
    # 32 states, each taken once with each action (AWAC compares actions of one state through the critic)
    obs = {k: torch.as_tensor(rng.standard_normal((32, *v.shape)).astype(np.float32)).repeat(2, *([1] * len(v.shape)))
           for k, v in LOWDIM.items()}
    base, phase = torch.zeros(64, N), torch.zeros(64, dtype=torch.long)
    taken = torch.cat([base[:32] + best, base[32:] - best])
    feat = agent.policy.encoder(obs).detach()
    for _ in range(300):
        agent._actor_update(feat, base, phase, taken)
    res = agent.policy.residual(feat, base, phase).detach()
    expected = torch.zeros(N) if flat else best
    torch.testing.assert_close(res.mean(0), expected, atol=0.012, rtol=0)
    with pytest.raises(ValueError, match="taken actions"):
        agent.actor_objective(feat, base, phase)


# ---- n-step returns and replay -----------------------------------------------------------------------

def test_n_step_returns_hand_computed():
    g = 0.9
    ret, disc, nxt, valid = n_step_returns(np.array([0, 0, 0, 1.0]), terminal=True, n=3, gamma=g)
    np.testing.assert_allclose(ret, [0, g * g, g, 1], rtol=1e-6)
    np.testing.assert_allclose(disc, [g ** 3, 0, 0, 0], rtol=1e-6)
    assert nxt[0] == 3 and valid.all()
    # time-out: bootstrap from the last observation, never past it; the last step has no next obs
    ret, disc, nxt, valid = n_step_returns(np.array([0.5, 0, 0.25, 0.0]), terminal=False, n=3, gamma=g)
    np.testing.assert_allclose(ret, [0.5 + g * g * 0.25, g * 0.25, 0.25, 0], rtol=1e-6)
    np.testing.assert_allclose(disc[:3], [g ** 3, g ** 2, g], rtol=1e-6)
    assert nxt[:3].tolist() == [3, 3, 3] and valid.tolist() == [True, True, True, False]
    # one-step episode ending in success; n = 1
    ret, disc, _, valid = n_step_returns(np.array([1.0]), terminal=True, n=3, gamma=g)
    assert ret.tolist() == [1.0] and disc.tolist() == [0.0] and valid.all()
    ret, disc, nxt, _ = n_step_returns(np.array([0, 0, 1.0]), terminal=True, n=1, gamma=g)
    assert ret.tolist() == [0, 0, 1] and np.allclose(disc, [g, g, 0]) and nxt[:2].tolist() == [1, 2]


def test_replay_keeps_episode_boundaries_and_evicts_whole_episodes():
    spec = {"obs/joint_pos": KeySpec((1,), "float32")}
    buf = ReplayBuffer(10, spec, 1, n_step=3, gamma=0.9, chunk_length=4)
    for e, (T, success) in enumerate([(4, True), (4, False), (4, True)]):
        obs = {"obs/joint_pos": np.full((T, 1), e, np.float32)}
        r = np.zeros(T)
        r[-1] = float(success)
        buf.add_episode(obs, np.zeros((T, 1)), np.zeros((T, 1)), r, terminal=success)
    # the third episode did not fit behind the second: it wrapped to row 0, evicting the first
    assert buf.n_episodes == 2 and len(buf) == 3 + 4  # time-out's last step is unsampleable
    b = buf.sample(500, torch.Generator().manual_seed(0))
    assert torch.equal(b["obs"]["obs/joint_pos"], b["next_obs"]["obs/joint_pos"])  # never crosses episodes
    assert set(b["obs"]["obs/joint_pos"].flatten().tolist()) == {1.0, 2.0}
    done = b["discount"] == 0
    assert torch.all(b["reward"][done] > 0) and torch.all(b["reward"][~done] == 0)  # only successes end it
    assert torch.equal(b["phase"] % 4, b["phase"]) and b["phase"].max() == 3
    with pytest.raises(ValueError, match="does not fit"):
        buf.add_episode({"obs/joint_pos": np.zeros((11, 1))}, np.zeros((11, 1)), np.zeros((11, 1)), np.zeros(11),
                        terminal=False)


def test_symmetric_sampling_proportions():
    agent = make_agent(spec=LOWDIM)
    rng = np.random.default_rng(0)
    online, demo = buffer(agent), buffer(agent)
    fill(online, rng, offset=100.0)
    fill(demo, rng, offset=-100.0)
    g = torch.Generator().manual_seed(0)
    b = sample_batch(online, demo, 256, 0.5, g)
    from_demo = b["obs"]["obs/joint_pos"].mean(1) < 0
    assert int(b["is_demo"].sum()) == 128 and torch.equal(from_demo, b["is_demo"])
    b = sample_batch(online, demo, 255, 0.25, g)
    assert int(b["is_demo"].sum()) == 64
    empty = buffer(agent)
    assert int(sample_batch(empty, demo, 64, 0.5, g)["is_demo"].sum()) == 64  # no rollouts yet: all demos
    assert int(sample_batch(online, empty, 64, 0.5, g)["is_demo"].sum()) == 0
    assert int(sample_batch(online, demo, 64, 0.0, g)["is_demo"].sum()) == 0  # demo_fraction 0: online only
    with pytest.raises(ValueError, match="empty"):
        sample_batch(empty, buffer(agent), 64, 0.5, g)


# ---- store, relabel cache, feeder -------------------------------------------------------------------

STORE_KEYS = {**{k: v for k, v in SPEC.items()}, "obs/depth_wrist": KeySpec((24, 24), "uint16"),
              "action": KeySpec((N,), "float32"), "base_action": KeySpec((N,), "float32"),
              "residual": KeySpec((N,), "float32"), "reward": KeySpec((), "float32"),
              "intervention": KeySpec((), "bool"), "stamp": KeySpec((), "float64")}
STORE_ATTRS = {"control_rate_hz": 10.0, "profile": {"name": "t"}, "streams": [],
               "action": {"joint_names": ["a", "b", "c"], "lower": [-3.0] * N, "upper": [3.0] * N}}


def add_episode(store, rng, T, source, success, t0=0.0):
    data = random_obs(rng, T, SPEC)
    data["obs/depth_wrist"] = np.zeros((T, 24, 24), np.uint16)
    data["action"] = rng.uniform(-1, 1, (T, N)).astype(np.float32)
    data["base_action"] = data["action"] + 0.1
    data["residual"] = np.full((T, N), -0.1, np.float32)
    data["reward"] = np.eye(T, dtype=np.float32)[-1] * success
    data["intervention"] = np.zeros(T, bool)
    data["stamp"] = t0 + np.arange(T) / 10.0
    return store.append_episode(data, source=source, success=success, start_time=t0, health={})


class CountingBase:
    def __init__(self):
        self.frames = 0
        self.shapes = []

    def __call__(self, obs):
        self.frames += len(obs["obs/joint_pos"])
        self.shapes.append(obs["obs/joint_pos"].shape)
        assert set(obs) == {k for k in STORE_KEYS if k.startswith("obs/")}
        pos = obs["obs/joint_pos"]
        return (pos[:, -1] if pos.ndim == 3 else pos) * 0.5  # a deterministic function of the (latest) obs


def test_demo_relabel_cache_hit_and_miss_by_hash(tmp_path):
    rng = np.random.default_rng(0)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    for i in range(3):
        add_episode(store, rng, 7, "demo", True, t0=i)
    base = CountingBase()
    out, st = relabel_episodes(store, [0, 1, 2], base, "abc123")
    assert (st.hits, st.misses, base.frames) == (0, 3, 21)
    assert st.cache_path == tmp_path / "s.zarr.base_actions" / "abc123.safetensors" and st.cache_path.exists()
    assert st.cache_path == cache_path(store.path, "abc123")
    out2, st2 = relabel_episodes(store, [0, 1, 2], base, "abc123")
    assert (st2.hits, st2.misses, base.frames) == (3, 0, 21)  # served from the cache: the base is not run
    for i in range(3):
        np.testing.assert_array_equal(out[i], out2[i])
        np.testing.assert_array_equal(out[i], store.read_episode(i, ["obs/joint_pos"])["obs/joint_pos"] * 0.5)
    _, st3 = relabel_episodes(store, [0, 1, 2], base, "def456")  # another base checkpoint
    assert (st3.hits, st3.misses, base.frames) == (0, 3, 42)
    add_episode(store, rng, 5, "demo", True, t0=9)
    _, st4 = relabel_episodes(store, [0, 1, 2, 3], base, "abc123")
    assert (st4.hits, st4.misses, base.frames) == (3, 1, 47)
    _, st5 = relabel_episodes(store, [0, 3], base, "abc123", cache_dir=tmp_path / "elsewhere")
    assert st5.misses == 2 and (tmp_path / "elsewhere" / "abc123.safetensors").exists()
    _, st6 = relabel_episodes(store, [3], base, "abc123", obs_horizon=2)  # history windows: own cache file
    assert st6.misses == 1 and st6.cache_path.name == "abc123.h2.safetensors"
    assert base.shapes[-1] == (5, 2, N)  # (batch, horizon, ...) edge-padded at the episode start
    with pytest.raises(ValueError, match="file name"):
        relabel_episodes(store, [0], base, "../evil")


def test_chunked_base_is_queried_at_chunk_starts_only(tmp_path):
    rng = np.random.default_rng(4)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    add_episode(store, rng, 10, "demo", True)
    tag = store.read_episode(0)["obs/tactile_tip"][:, 0, 0]  # random per frame: identifies the frame
    calls = []

    def chunked_base(obs):
        """(B, 6, n) chunks: step k of the chunk predicted at a frame is tag(frame) + 100 k."""
        calls.append(len(obs["obs/tactile_tip"]))
        start = obs["obs/tactile_tip"][:, 0, 0]
        return np.repeat((start[:, None] + 100 * np.arange(6)[None, :])[:, :, None], N, axis=2)

    out, st = relabel_episodes(store, [0], chunked_base, "c1", chunk_length=4)
    assert calls == [3] and st.frames == 3  # frames 0, 4 and 8 only
    expected = [tag[t - t % 4] + 100 * (t % 4) for t in range(10)]  # what open-loop chunks execute
    np.testing.assert_allclose(out[0][:, 0], expected, rtol=1e-5)
    _, st = relabel_episodes(store, [0], chunked_base, "c1", chunk_length=4)
    assert st.hits == 1 and calls == [3]
    _, st = relabel_episodes(store, [0], chunked_base, "c1", chunk_length=2)  # other chunking: recomputed
    assert st.misses == 1 and calls[-1] == 5


def test_feeder_routes_sources_and_labels_demos(tmp_path):
    rng = np.random.default_rng(1)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    add_episode(store, rng, 6, "demo", True)
    add_episode(store, rng, 6, "demo", False)  # failed demo: skipped by default
    add_episode(store, rng, 8, "rollout", False)
    add_episode(store, rng, 5, "intervention", True)
    agent = agent_from_store(store, tiny(), device="cpu")
    assert set(agent.obs_spec) == {"obs/joint_pos", "obs/tactile_tip", "obs/camera_wrist"}  # depth skipped
    assert agent.obs_spec["obs/camera_wrist"].shape == (24, 24, 3)
    online, demo = make_buffers(agent)
    feeder = StoreFeeder(store, agent, online, demo, base_action_fn=CountingBase(), base_hash="h1")
    res = feeder.poll()
    assert res.episodes == 4 and res.skipped == [1] and res.env_steps == 13
    assert (online.n_episodes, demo.n_episodes) == (2, 2)  # intervention goes to both
    assert len(online) == 7 + 5 and len(demo) == 6 + 5
    # demo episode 0: executed action = the human's projected into base +- action_scale (what the actor
    # can reach), base = the relabel, reward 1 + done at the end
    ep = store.read_episode(0)
    norm, scale = agent.policy.action_norm, agent.cfg.action_scale
    base_n = norm.normalize_np(ep["obs/joint_pos"] * 0.5)
    human_n = norm.normalize_np(ep["action"])
    assert (np.abs(human_n - base_n) > scale).any()  # the projection has something to do here
    np.testing.assert_allclose(demo.action[:6].numpy(), np.clip(human_n, base_n - scale, base_n + scale), rtol=1e-6)
    np.testing.assert_allclose(demo.base[:6].numpy(), base_n, rtol=1e-6)
    raw = agent_from_store(store, tiny().replace(project_actions=False), device="cpu")
    raw_online, raw_demo = make_buffers(raw)
    StoreFeeder(store, raw, raw_online, raw_demo, base_action_fn=CountingBase(), base_hash="h1").poll()
    np.testing.assert_allclose(raw_demo.action[:6].numpy(), human_n, rtol=1e-6)
    assert demo.ret[5].item() == 1.0 and demo.discount[5].item() == 0.0
    # rollouts keep their recorded base action
    ep2 = store.read_episode(2)
    np.testing.assert_allclose(online.base[:8].numpy(), norm.normalize_np(ep2["base_action"]), rtol=1e-6)
    assert feeder.poll().episodes == 0
    add_episode(store, rng, 4, "rollout", True)
    res = feeder.poll()
    assert res.episodes == 1 and res.env_steps == 4 and online.n_episodes == 3
    # demos without a base to relabel them are refused, not silently trained on the human action
    with pytest.raises(ValueError, match="need relabelling"):
        StoreFeeder(store, agent, *make_buffers(agent)).poll()


def test_base_features_are_held_per_chunk_for_demos_and_rollouts(tmp_path):
    rng = np.random.default_rng(5)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    add_episode(store, rng, 7, "demo", True)
    add_episode(store, rng, 5, "rollout", False)
    calls = []

    def features(obs):  # (B, 4): the frame's tag, so each step shows which frame it was computed at
        calls.append(len(obs["obs/tactile_tip"]))
        return np.repeat(obs["obs/tactile_tip"][:, :1, 0], 4, axis=1)

    cfg = tiny(chunk_length=3, encoder={"base_features": True})
    with pytest.raises(ValueError, match="base_feature_dim"):
        agent_from_store(store, cfg, device="cpu")
    agent = agent_from_store(store, cfg, device="cpu", base_feature_dim=4)
    assert agent.obs_spec["base/features"].shape == (4,)
    online, demo = make_buffers(agent)
    with pytest.raises(ValueError, match="base_features_fn"):
        StoreFeeder(store, agent, online, demo, base_action_fn=CountingBase(), base_hash="h1")
    feeder = StoreFeeder(store, agent, online, demo, base_action_fn=CountingBase(), base_hash="h1",
                         base_features_fn=features)
    feeder.poll()
    assert calls == [3, 2]  # chunk starts only: frames 0, 3, 6 of the demo; 0, 3 of the rollout
    for buf, ep, T in ((demo, 0, 7), (online, 1, 5)):
        tag = store.read_episode(ep)["obs/tactile_tip"][:, 0, 0]
        expected = np.repeat(tag[np.arange(T) - np.arange(T) % 3][:, None], 4, axis=1)
        np.testing.assert_allclose(buf.obs["base/features"][:T].numpy(), expected, rtol=1e-6)
    from safetensors import safe_open
    with safe_open(str(cache_path(store.path, "h1", tag="features")), framework="numpy") as f:
        assert list(f.keys()) == ["episode_000000"]  # demos are cached; rollouts are computed once, not cached
    feats = {k: v[:2] for k, v in demo.obs.items()}
    out = agent.policy_step({k: v.numpy() for k, v in feats.items()}, np.zeros((2, N), np.float32), torch.zeros(2))
    assert torch.equal(out.residual_normalized, torch.zeros(2, N))  # zero-initialised: the base exactly


def test_resume_rebuilds_buffers_without_recounting(tmp_path):
    rng = np.random.default_rng(2)
    store = Store.create(tmp_path / "s.zarr", keys=STORE_KEYS, attrs=STORE_ATTRS, durable=False)
    add_episode(store, rng, 6, "demo", True)
    add_episode(store, rng, 8, "rollout", False)
    agent = agent_from_store(store, tiny(), device="cpu")
    online, demo = make_buffers(agent)
    base = CountingBase()
    ingest(StoreFeeder(store, agent, online, demo, base_action_fn=base, base_hash="h"), agent)
    assert agent.counters["env_steps"] == 8 and agent.counters["episodes_ingested"] == 2
    save_checkpoint(agent, tmp_path / "ckpt")
    add_episode(store, rng, 5, "rollout", True)  # committed while the learner was down
    resumed = load_checkpoint(tmp_path / "ckpt", device="cpu")
    on2, demo2 = make_buffers(resumed)
    feeder = StoreFeeder(store, resumed, on2, demo2, base_action_fn=base, base_hash="h")
    feeder.poll(limit=resumed.counters["episodes_ingested"])  # rebuild: nothing counted again
    assert (len(on2), len(demo2), resumed.env_steps) == (len(online), len(demo), 8)
    assert base.frames == 6  # demo relabels came from the cache
    res = ingest(feeder, resumed)
    assert res.episodes == 1 and resumed.env_steps == 13 and resumed.counters["episodes_ingested"] == 3


# ---- UTD throttle ------------------------------------------------------------------------------------

def test_utd_throttle_and_critic_warmup():
    agent = make_agent(spec=LOWDIM, warmup_env_steps=100, critic_warmup_updates=10, utd=4, actor_every=4)
    rng = np.random.default_rng(0)
    online = buffer(agent)
    fill(online, rng)
    assert agent.updates_allowed() == 0 and agent.in_env_warmup
    agent.record_env_steps(60)
    assert agent.updates_allowed() == 0 and agent.run_updates(online, None) == []
    agent.record_env_steps(40)  # warm-up done: the critic-only burst
    assert not agent.in_env_warmup and agent.updates_allowed() == 10
    metrics = agent.run_updates(online, None)
    assert len(metrics) == 10 and agent.updates_allowed() == 0 and agent.actor_updates == 0
    assert all("actor_loss" not in m for m in metrics)
    agent.record_env_steps(3)  # then exactly utd critic updates per env step
    assert agent.updates_allowed() == 12 and agent.updates_allowed(env_steps=110) == 40
    metrics = agent.run_updates(online, None, limit=5)
    assert len(metrics) == 5 and agent.updates_allowed() == 7
    metrics += agent.run_updates(online, None)
    assert agent.critic_updates == 22 and agent.actor_updates == 3  # at updates 12, 16, 20
    assert [m["critic_updates"] for m in metrics if "actor_loss" in m] == [12, 16, 20]
    assert {"critic_loss", "q_mean", "q_min", "q_max", "residual_abs_mean"} <= set(metrics[1])
    assert all(np.isfinite(v) for m in metrics for v in m.values())


# ---- checkpoints ------------------------------------------------------------------------------------

def all_state(agent) -> dict[str, torch.Tensor]:
    out = {f"{m}.{k}": v for m, mod in agent.modules().items() for k, v in mod.state_dict().items()}
    for name, opt in agent.optimizers().items():
        for pid, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{name}.{pid}.{k}"] = torch.as_tensor(v)
    for k, g in agent.generators.items():
        out[f"gen.{k}"] = g.get_state()
    return out


def test_exact_resume_is_bit_identical(tmp_path):
    kw = dict(critic_warmup_updates=4, actor_every=2, warmup_env_steps=0, actor_lr=1e-3)
    rng = np.random.default_rng(0)
    a = make_agent(**kw)
    online, demo = buffer(a), buffer(a)
    fill(online, rng)
    fill(demo, rng)

    def train(agent, n):
        for _ in range(n):
            agent.update(agent.sample(online, demo))

    train(a, 8)
    save_checkpoint(a, tmp_path / "ckpt", extra={"store_episodes": 12})
    train(a, 10)
    b = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert b.counters == {"env_steps": 0, "critic_updates": 8, "actor_updates": 2, "episodes_ingested": 0}
    assert b.checkpoint_extra == {"store_episodes": 12}
    train(b, 10)
    sa, sb = all_state(a), all_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.counters == b.counters and a.actor_updates > 2
    # the actor is restored too (not re-initialised): its head is non-zero after actor updates
    assert b.policy.actor.head.weight.abs().sum() > 0
    # saving again replaces atomically; an interrupted swap (only the old dir left) still loads
    save_checkpoint(b, tmp_path / "ckpt")
    os.rename(tmp_path / "ckpt", tmp_path / ".ckpt.old-deadbeef")
    c = load_checkpoint(tmp_path / "ckpt")
    assert c.critic_updates == b.critic_updates
    files = sorted(p.name for p in (tmp_path / ".ckpt.old-deadbeef").iterdir())
    assert files == ["model.safetensors", "optim.safetensors", "residual.json", "residual.safetensors",
                     "rng.safetensors", "state.json"]  # no pickle
    state = json.loads((tmp_path / ".ckpt.old-deadbeef" / "state.json").read_text())
    assert state["counters"]["critic_updates"] == 18 and state["config"]["actor_lr"] == 1e-3


# ---- actor weights on the wire -----------------------------------------------------------------------

def trained_agent():
    agent = make_agent(critic_warmup_updates=0, actor_every=1, warmup_env_steps=0, actor_lr=1e-3)
    rng = np.random.default_rng(0)
    online = buffer(agent)
    fill(online, rng)
    for _ in range(3):
        agent.update(agent.sample(online, None))
    return agent


def test_weight_export_import_round_trip():
    agent = trained_agent()
    data, meta = export_actor_weights(agent)
    assert isinstance(data, bytes) and meta["version"] == 3 and meta["step"] == 0 and len(meta["sha256"]) == 64
    assert json.loads(meta["architecture"]) == agent.arch == architecture(agent.cfg, agent.obs_spec, N)
    json.dumps(meta)  # JSON-able: it travels beside the bytes
    policy = policy_from_weights(data, meta, agent.arch)
    rng = np.random.default_rng(3)
    obs = {k: torch.as_tensor(v) for k, v in random_obs(rng, 5).items()}
    base, phase = torch.zeros(5, N), torch.arange(5)
    out = policy(obs, base, phase)
    ref = agent.policy_step(obs, base, phase, explore=False)
    assert torch.equal(out.action, ref.action) and out.residual_normalized.abs().sum() > 0
    sd = load_actor_weights(data, meta, json.dumps(agent.arch))
    assert set(sd) == set(agent.policy.state_dict())


@pytest.mark.parametrize("hash_in_thread", [False, True])
def test_weight_import_rejections(hash_in_thread, monkeypatch):
    # big messages are hashed in a thread while the tensors are checked: same verdicts either way
    monkeypatch.setattr(checkpoint._Sha256, "THREAD_ABOVE", 0 if hash_in_thread else 1 << 40)
    agent = trained_agent()
    data, meta = export_actor_weights(agent)
    arch = agent.arch
    sd = {k: v.clone() for k, v in agent.policy.state_dict().items()}

    def signed(tensors, **over):
        raw = st_save(tensors)
        return raw, {**meta, "sha256": hashlib.sha256(raw).hexdigest(), **over}

    def reason(d, m, expected=arch):
        with pytest.raises(WeightsRejected) as e:
            load_actor_weights(d, m, expected)
        return e.value.reason

    corrupted = bytearray(data)
    corrupted[3:40] = b"\xff" * 37  # header destroyed, checksum recomputed: the parse must fail
    assert reason(bytes(corrupted), {**meta, "sha256": hashlib.sha256(bytes(corrupted)).hexdigest()}) == "corrupt"
    half = data[: len(data) // 2]
    assert reason(half, {**meta, "sha256": hashlib.sha256(half).hexdigest()}) == "corrupt"
    assert reason(bytes(corrupted), meta) == "checksum"  # flipped bytes under the original checksum
    assert reason(data, {**meta, "sha256": "0" * 64}) == "checksum"
    with pytest.raises(WeightsRejected, match="checksum"):  # also when the bytes would build a policy
        policy_from_weights(data, {**meta, "sha256": "0" * 64}, arch)
    nan = dict(sd)
    nan["actor.head.weight"] = nan["actor.head.weight"].clone()
    nan["actor.head.weight"][0, 0] = float("nan")
    assert reason(*signed(nan)) == "non_finite"
    wrong_shape = dict(sd)
    wrong_shape["actor.head.bias"] = torch.zeros(N + 1)
    assert reason(*signed(wrong_shape)) == "shape"
    missing = {k: v for k, v in sd.items() if k != "actor.head.bias"}
    assert reason(*signed(missing)) == "keys"
    wrong_dtype = dict(sd)
    wrong_dtype["actor.head.bias"] = sd["actor.head.bias"].double()
    assert reason(*signed(wrong_dtype)) == "dtype"
    other = {**arch, "actor_hidden": 32}
    with pytest.raises(WeightsRejected, match="actor_hidden: got 64, expected 32"):
        load_actor_weights(data, meta, other)
    assert reason(data, {k: v for k, v in meta.items() if k != "sha256"}) == "metadata"
    assert reason(data, {**meta, "architecture": "{not json"}) == "metadata"
    # weights exported by a differently shaped learner are refused by architecture, before parsing
    other_agent = ResidualTD3(tiny(actor_hidden=32), SPEC, N, device="cpu")
    d2, m2 = export_actor_weights(other_agent)
    assert reason(d2, m2) == "architecture"
    # a rejected message leaves a running policy untouched
    policy = ResidualPolicy(arch)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(WeightsRejected):
        policy.load_state_dict(load_actor_weights(*signed(nan), arch))
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_no_pickle_and_no_rclpy_in_rl_core():
    src = Path(__file__).resolve().parent.parent / "robot_rl" / "rl"
    for f in src.glob("*.py"):
        text = f.read_text()
        assert "import pickle" not in text and "rclpy" not in text, f
        assert "torch.load(" not in text, f
