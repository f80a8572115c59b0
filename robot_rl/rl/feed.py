"""From the store to the learner: agent setup from a store's layout and demos, and a feeder that
moves newly committed episodes into the replay buffers.

Sources: `demo` -> demo buffer (relabelled with the frozen base; reward 1 + done on the last frame of
a successful demo); `rollout` -> online buffer; `intervention` -> online buffer and (SERL) the demo
buffer. Demos keep the human action as the executed action; rollouts use the recorded `action` (what
was really executed, after safety clipping) and `base_action`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from robot_rl.data.recording import CHUNK_PHASE
from robot_rl.data.schema import KeySpec
from robot_rl.data.store import Store
from robot_rl.rl.agent import ResidualTD3
from robot_rl.rl.config import ResidualRLConfig
from robot_rl.rl.decisions import chunk_phases, episode_transitions
from robot_rl.rl.encoder import BASE_FEATURES, is_camera, obs_spec_from_keys
from robot_rl.rl.normalize import data_bounds
from robot_rl.rl.offset import OffsetSpace, offset_transitions
from robot_rl.rl.relabel import BaseActionFn, RelabelStats, relabel_episodes
from robot_rl.rl.replay import ReplayBuffer

ONLINE_SOURCES = ("rollout", "intervention")


def demo_episodes(store: Store, cfg: ResidualRLConfig) -> list[int]:
    return [m["index"] for m in store.episodes_meta()
            if m["source"] == "demo" and (m["success"] or not cfg.demos_successful_only)]


def agent_from_store(store: Store, cfg: ResidualRLConfig, device=None,
                     base_feature_dim: int | None = None, offset_space: OffsetSpace | None = None) -> ResidualTD3:
    """A fresh agent shaped by the store: observation layout, action bounds (demo min-max or the
    profile's joint limits) and low-dim standardisation statistics from the demos. With
    `encoder.base_features`, `base_feature_dim` is the base's (features enter unstandardised). With
    `decision: offset` its actions are offsets in `offset_space`, bounded by the offset range."""
    obs_spec = obs_spec_from_keys(store.keys, cfg.encoder)
    if cfg.encoder.base_features:
        if not base_feature_dim:
            raise ValueError("encoder.base_features is on but no base_feature_dim was given (the base's feature_dim)")
        obs_spec[BASE_FEATURES] = KeySpec((int(base_feature_dim),), "float32")
    n = store.keys["action"].shape[0]
    demos = demo_episodes(store, cfg)
    low_keys = sorted(k for k, s in obs_spec.items() if not is_camera(k, s) and k != BASE_FEATURES)
    data = store.load(["action", *low_keys], episodes=demos) if demos else None
    if cfg.decision == "offset":
        if offset_space is None:
            raise ValueError("decision: offset needs the offset space (OffsetSpace(cfg.offset, profile))")
        n = offset_space.dim
        low, high = np.full(n, -offset_space.range), np.full(n, offset_space.range)
    elif cfg.action_bounds == "data" and data is not None:
        low, high = data_bounds(data["action"])
    else:
        spec = store.attrs.get("action", {})
        low, high = np.asarray(spec.get("lower", [-1.0] * n)), np.asarray(spec.get("upper", [1.0] * n))
    mean = std = None
    if data is not None and low_keys:
        flat = np.concatenate([data[k].reshape(len(data[k]), -1).astype(np.float64) for k in low_keys], axis=1)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        if BASE_FEATURES in obs_spec:  # sorts first among the low-dim keys
            mean = np.concatenate([np.zeros(base_feature_dim), mean])
            std = np.concatenate([np.ones(base_feature_dim), std])
    return ResidualTD3(cfg, obs_spec, n, action_low=low, action_high=high, low_dim_mean=mean, low_dim_std=std,
                       device=device)


def replay_device(cfg: ResidualRLConfig, obs_spec) -> torch.device:
    if cfg.replay_device != "auto":
        return torch.device(cfg.replay_device)
    has_images = any(is_camera(k, s) for k, s in obs_spec.items())
    return torch.device("cuda" if torch.cuda.is_available() and not has_images else "cpu")


def make_buffers(agent: ResidualTD3) -> tuple[ReplayBuffer, ReplayBuffer]:
    """(online, demo) buffers shaped for the agent."""
    cfg, n = agent.cfg, agent.arch["action_dim"]
    dev = replay_device(cfg, agent.obs_spec)
    kw = dict(n_step=cfg.n_step, gamma=cfg.gamma, chunk_length=cfg.chunk_length, device=dev)
    return (ReplayBuffer(cfg.online_capacity, agent.obs_spec, n, **kw),
            ReplayBuffer(cfg.demo_capacity, agent.obs_spec, n, **kw))


@dataclass
class FeedResult:
    episodes: int = 0  # store episodes consumed
    env_steps: int = 0  # steps of new online episodes (what the UTD ratio counts)
    online_transitions: int = 0
    demo_transitions: int = 0
    skipped: list[int] = field(default_factory=list)  # failed demos (demos_successful_only), unknown sources
    relabel: RelabelStats = field(default_factory=RelabelStats)


class StoreFeeder:
    """Consumes a store's committed episodes in order. `poll()` refreshes the store and adds what is
    new; on resume pass `limit=agent.counters["episodes_ingested"]` once to rebuild the buffers
    without counting those steps again."""

    def __init__(self, store: Store, agent: ResidualTD3, online: ReplayBuffer, demo: ReplayBuffer, *,
                 base_action_fn: BaseActionFn | None = None, base_hash: str | None = None,
                 cache_dir: str | os.PathLike | None = None, base_features_fn: BaseActionFn | None = None,
                 offset_space: OffsetSpace | None = None):
        self.store, self.agent, self.online, self.demo = store, agent, online, demo
        self.offset_space = offset_space
        if agent.cfg.decision == "offset" and offset_space is None:
            raise ValueError("decision: offset needs the offset space (OffsetSpace(cfg.offset, profile))")
        self.base_action_fn, self.base_hash, self.cache_dir = base_action_fn, base_hash, cache_dir
        self.base_features_fn = base_features_fn
        if BASE_FEATURES in agent.obs_spec and (base_features_fn is None or not base_hash):
            raise ValueError("the residual takes the base's features (encoder.base_features) but no "
                             "base_features_fn/base_hash was given")
        self.next_episode = 0
        self._keys = [k for k in agent.obs_spec if k != BASE_FEATURES] + ["action", "base_action", "reward"] + \
            ([CHUNK_PHASE] if CHUNK_PHASE in store.keys else [])

    def poll(self, limit: int | None = None) -> FeedResult:
        self.store.refresh()
        meta = self.store.episodes_meta()
        upto = len(meta) if limit is None else min(len(meta), limit)
        todo = meta[self.next_episode:upto]
        result = FeedResult()
        cfg = self.agent.cfg
        demos = [m["index"] for m in todo if m["source"] == "demo" and (m["success"] or not cfg.demos_successful_only)
                 and cfg.decision != "offset"]  # a demo has no offset decisions: nothing to relabel
        relabelled: dict[int, np.ndarray] = {}
        if demos:
            if self.base_action_fn is None or not self.base_hash:
                raise ValueError(f"{self.store.path}: {len(demos)} demo episodes need relabelling but no "
                                 "base_action_fn/base_hash was given")
            relabelled, result.relabel = relabel_episodes(
                self.store, demos, self.base_action_fn, self.base_hash, cache_dir=self.cache_dir,
                obs_horizon=cfg.base_obs_horizon, chunk_length=cfg.chunk_length)
        features: dict[int, np.ndarray] = {}
        if BASE_FEATURES in self.agent.obs_spec:  # demos cached like their relabels; rollouts computed once
            online = [m["index"] for m in todo if m["source"] in ONLINE_SOURCES]
            for wanted, cache in (([i for i in relabelled], True), (online, False)):
                if wanted:
                    features.update(relabel_episodes(
                        self.store, wanted, self.base_features_fn, self.base_hash, cache_dir=self.cache_dir,
                        obs_horizon=cfg.base_obs_horizon, chunk_length=cfg.chunk_length, tag="features",
                        hold=True, cache=cache, phases=None if cache else self._recorded_phases(wanted))[0])
        for m in todo:
            self._add(m, relabelled.get(m["index"]), result, features.get(m["index"]))
            result.episodes += 1
        self.next_episode = upto
        return result

    def _recorded_phases(self, episodes: list[int]) -> dict[int, np.ndarray] | None:
        """The policy node's chunk phases of these rollouts (the features it held per chunk follow them)."""
        if CHUNK_PHASE not in self.store.keys:
            return None
        return {i: self.store.load([CHUNK_PHASE], episodes=[i])[CHUNK_PHASE] for i in episodes}

    def _add(self, m: dict, relabel: np.ndarray | None, result: FeedResult, features: np.ndarray | None) -> None:
        src, success = m["source"], m["success"]
        if self.offset_space is not None:
            return self._add_offset(m, result, features)
        if (src == "demo" and relabel is None) or (src != "demo" and src not in ONLINE_SOURCES):
            result.skipped.append(m["index"])
            return
        ep = self.store.load(self._keys, episodes=[m["index"]])
        cfg, norm = self.agent.cfg, self.agent.policy.action_norm
        reward = ep["reward"].astype(np.float32).copy()
        if success:
            reward[-1] = 1.0  # sparse 0/1 reward, episode terminates on success
        obs = {k: ep[k] for k in self.agent.obs_spec if k != BASE_FEATURES}
        if features is not None:
            obs[BASE_FEATURES] = features
        phase = chunk_phases(ep.get(CHUNK_PHASE), len(reward), cfg.chunk_length)
        base = relabel if src == "demo" else ep["base_action"]
        batch = episode_transitions(cfg.decision, obs, norm.normalize_np(base), norm.normalize_np(ep["action"]), reward,
                                    phase, action_scale=cfg.action_scale, project=cfg.project_actions, gamma=cfg.gamma)
        if src in ONLINE_SOURCES:
            result.online_transitions += self.online.add_episode(**batch, terminal=success)
            result.env_steps += m["length"]
        if src == "demo" or (src == "intervention" and cfg.interventions_to_demo):
            result.demo_transitions += self.demo.add_episode(**batch, terminal=success)

    def _add_offset(self, m: dict, result: FeedResult, features: np.ndarray | None) -> None:
        """decision: offset learns from the policy's rollouts only: a demo or an intervention has no
        offset decisions (a human's correction is not a gated, held offset)."""
        if m["source"] != "rollout":
            result.skipped.append(m["index"])
            return
        ep = self.store.load(self._keys, episodes=[m["index"]])
        cfg = self.agent.cfg
        obs = {k: ep[k] for k in self.agent.obs_spec if k != BASE_FEATURES}
        if features is not None:  # the base's features of the chunk each tick belongs to
            obs[BASE_FEATURES] = features
        batch = offset_transitions(self.offset_space, obs, ep["base_action"], ep["action"], m["success"],
                                   action_scale=cfg.action_scale, gamma=cfg.gamma)
        if batch is not None:
            result.online_transitions += self.online.add_episode(**batch, terminal=True)
        result.env_steps += m["length"]


def ingest(feeder: StoreFeeder, agent: ResidualTD3) -> FeedResult:
    """poll() and count the new online steps on the agent (for the UTD throttle)."""
    res = feeder.poll()
    agent.record_env_steps(res.env_steps, res.episodes)
    return res


__all__: Sequence[str] = ["agent_from_store", "make_buffers", "StoreFeeder", "FeedResult", "ingest", "demo_episodes"]
