"""The learner loop (no ROS): follow the store, train at the enforced update-to-data ratio, hand out
weights every N updates, checkpoint atomically, resume exactly. The learner node wraps it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.store import Store
from robot_rl.rl.checkpoint import export_actor_weights, load_checkpoint, save_checkpoint
from robot_rl.rl.config import ResidualRLConfig
from robot_rl.rl.feed import StoreFeeder, agent_from_store, ingest, make_buffers
from robot_rl.rl.offset import OffsetSpace


class LearnerError(RuntimeError):
    """The learner cannot start as configured; the message says what to fix."""


def _base_window(base, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of store frames (or frame windows) as the base's input: its keys, a horizon axis."""
    obs = {k: v for k, v in obs.items() if k in base.obs_keys}
    return {k: v[:, None] for k, v in obs.items()} if base.obs_horizon == 1 else obs


def base_action_fn_for(base):
    """Relabelling queries for a robot_rl.policies base: whole chunks, deterministic (cacheable)."""
    return lambda obs: base.predict(_base_window(base, obs), seed=0)


def base_features_fn_for(base):
    """The base encoder's features of an observation batch (B, feature_dim), for encoder.base_features."""
    return lambda obs: base.features(_base_window(base, obs)).numpy()


class Learner:
    def __init__(self, store_path: str | Path, base, cfg: ResidualRLConfig, run_dir: str | Path, device=None,
                 profile=None):
        self.store_path, self.run_dir = Path(store_path), Path(run_dir)
        try:
            self.store = Store.open(self.store_path)
        except Exception as e:  # noqa: BLE001 - any open failure is a start-up error for the user
            raise LearnerError(f"cannot open the store: {e}") from None
        sources = {m["source"] for m in self.store.episodes_meta()}
        if "demo" not in sources:
            raise LearnerError(f"{self.store_path} has no demonstrations (sources: {sorted(sources) or 'none'}); "
                               "collect some with `robot-rl collect` first")
        missing = [k for k in base.obs_keys if k not in self.store.keys]
        if missing:
            raise LearnerError(f"the base policy needs {missing}, which {self.store_path} does not record")
        self.base = base
        self.checkpoint_dir = self.run_dir / "learner"
        self.resumed = (self.checkpoint_dir / "state.json").is_file()
        if self.resumed:
            self.agent = load_checkpoint(self.checkpoint_dir, device=device)
            cfg = self.agent.cfg
        offset_space = None
        if cfg.decision == "offset":  # where the offset lives needs the robot's joints and kinematics
            if profile is None:
                raise LearnerError("decision: offset needs the robot profile (its joints and kinematics)")
            offset_space = OffsetSpace(cfg.offset, profile)
        if not self.resumed:
            self.agent = agent_from_store(self.store, cfg, device=device, base_feature_dim=base.feature_dim,
                                          offset_space=offset_space)
        self.online, self.demo = make_buffers(self.agent)
        self.feeder = StoreFeeder(self.store, self.agent, self.online, self.demo,
                                  base_action_fn=base_action_fn_for(base), base_hash=base.checkpoint_hash,
                                  base_features_fn=base_features_fn_for(base), offset_space=offset_space)
        if self.resumed:  # rebuild the buffers without counting those env steps twice
            self.feeder.poll(limit=self.agent.counters["episodes_ingested"])
        self.metrics: dict[str, float] = {}
        # A restarted learner resumes from its last checkpoint, which may be older than the last
        # weights it published: the incarnation (start time) orders its weights after the old ones.
        self.incarnation = time.time()
        self.last_checkpoint = time.monotonic()
        self.started = time.monotonic()

    def ingest(self) -> int:
        """New committed episodes into the buffers; returns how many."""
        return ingest(self.feeder, self.agent).episodes

    def train(self, max_updates: int = 50) -> int:
        """Up to `max_updates` updates, never beyond what the update-to-data ratio allows."""
        done = 0
        if not len(self.online) and not len(self.demo):
            return 0  # nothing to train on yet (decision: offset before any gate opened)
        while done < max_updates and self.agent.updates_allowed() > 0:
            self.metrics = self.agent.update(self.agent.sample(self.online, self.demo))
            done += 1
        return done

    def weights(self) -> tuple[bytes, dict[str, Any]]:
        data, meta = export_actor_weights(self.agent)
        return data, {**meta, "incarnation": self.incarnation}

    def checkpoint(self) -> Path:
        self.last_checkpoint = time.monotonic()
        return save_checkpoint(self.agent, self.checkpoint_dir, extra={"store": str(self.store_path),
                                                                        "base": self.base.checkpoint_hash})

    def status(self) -> dict[str, Any]:
        c = self.agent.counters
        env = max(1, c["env_steps"])
        return {**{k: round(float(v), 5) for k, v in self.metrics.items() if isinstance(v, (int, float))},
                "env_steps": c["env_steps"], "critic_updates": c["critic_updates"], "actor_updates": c["actor_updates"],
                "episodes_ingested": c["episodes_ingested"], "realized_utd": round(c["critic_updates"] / env, 3),
                "online_size": len(self.online), "demo_size": len(self.demo), "resumed": self.resumed}

    def close(self) -> None:
        self.store.close()
