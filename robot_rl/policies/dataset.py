"""Training sequences from the store: committed episodes in RAM (images stay uint8), an
episode-level train/validation split, and raw torch batches (the model normalises).

Windows are diffusion_policy's: obs_horizon steps of observations ending at the current step and a
pred_horizon action chunk starting at it, padded by repeating an episode's first/last step.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from robot_rl.data.sampler import SequenceSampler, split_episodes
from robot_rl.data.schema import StoreError
from robot_rl.data.store import Store
from robot_rl.policies.config import PolicyConfig, TrainConfig
from robot_rl.policies.encoders import resize_uint8, stream_kind
from robot_rl.policies.normalizer import compute_stats
from robot_rl.policies.spec import PolicySpec, check_store, default_obs_keys, spec_from_store


class DatasetError(ValueError):
    """The store cannot train this policy (empty, no matching episodes, ...)."""


def data_hash(data: Mapping[str, np.ndarray]) -> str:
    """sha256 of the exact rows used (keys, dtypes, shapes, bytes, episode ends)."""
    h = hashlib.sha256()
    for key in sorted(data):
        a = np.ascontiguousarray(data[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


class PolicyDataset:
    def __init__(self, store_path: str | Path, cfg: PolicyConfig, train: TrainConfig,
                 expect: PolicySpec | None = None, episodes: list[int] | None = None):
        """`expect`: the spec of a checkpoint being resumed (a store of another setup is refused);
        `episodes`: exactly these store episodes (a resumed run keeps its data while the store grows)."""
        path = Path(store_path)
        if not path.exists():
            raise DatasetError(f"store {path} does not exist")
        store = Store.open(path)
        if expect is not None:
            check_store(expect, store)
        meta = store.episodes_meta()
        if not meta:
            raise DatasetError(f"store {path} has no committed episodes")
        chosen = [m["index"] for m in meta if m["source"] in train.sources and (train.episodes == "all" or m["success"])]
        if train.max_episodes:
            chosen = chosen[:train.max_episodes]
        if episodes is not None:
            lost = [i for i in episodes if i >= len(meta)]
            if lost:
                raise DatasetError(f"store {path} lacks episodes {lost[:5]} that the resumed run trained on")
            chosen = list(episodes)
        if not chosen:
            raise DatasetError(f"store {path}: none of its {len(meta)} episodes has source in {train.sources}"
                               + (" and success" if train.episodes == "success" else ""))
        obs_keys = list(cfg.observation.keys) or default_obs_keys(store.keys)
        self.spec = spec_from_store(store, obs_keys, cfg.action_key)
        for k in obs_keys:
            stream_kind(k, store.keys[k].shape, store.keys[k].dtype)  # an unencodable stream fails here
        try:
            data = store.load([*obs_keys, cfg.action_key], episodes=chosen)
        except StoreError as e:
            raise DatasetError(str(e)) from None
        self.store_path, self.episodes, self.obs_keys = path, chosen, obs_keys
        self.data_hash = data_hash(data)
        size = cfg.observation.image.resize
        for k in obs_keys:  # resize frames once here instead of in every batch
            if size and stream_kind(k, store.keys[k].shape, store.keys[k].dtype) == "image":
                data[k] = np.concatenate([resize_uint8(torch.from_numpy(data[k][i:i + 256]), (size, size)).numpy()
                                          for i in range(0, len(data[k]), 256)])
        ends = data.pop("episode_ends")
        self.n_steps = int(ends[-1])
        train_eps, val_eps = split_episodes(len(chosen), train.val_fraction, train.seed)
        self.train_episodes, self.val_episodes = [chosen[i] for i in train_eps], [chosen[i] for i in val_eps]
        self.obs_horizon, self.pred_horizon = cfg.obs_horizon, cfg.pred_horizon
        kw = dict(obs_keys=obs_keys, action_keys=[cfg.action_key], obs_horizon=cfg.obs_horizon,
                  pred_horizon=cfg.obs_horizon - 1 + cfg.pred_horizon)  # the chunk starts at the current step
        self.train = SequenceSampler(data, ends, episodes=train_eps, **kw)
        self.val = SequenceSampler(data, ends, episodes=val_eps, **kw) if val_eps else None
        if len(self.train) == 0:
            raise DatasetError(f"store {path}: no training windows")
        modes = {cfg.action_key: cfg.action_norm}
        for k in obs_keys:
            kind = stream_kind(k, store.keys[k].shape, store.keys[k].dtype)
            if kind != "image":
                modes[k] = cfg.observation.tactile_norm if kind == "tactile" else cfg.observation.proprio_norm
        self.stats = compute_stats(data, modes)
        self.action_key = cfg.action_key

    def batch(self, sampler: SequenceSampler, windows: np.ndarray) -> dict[str, torch.Tensor]:
        """Raw batch: obs keys (B, obs_horizon, ...) uint8/float32, action (B, pred_horizon, A)."""
        raw = sampler.get(windows)
        start = self.obs_horizon - 1
        out = {k: torch.from_numpy(np.ascontiguousarray(raw[k])) for k in self.obs_keys}
        out[self.action_key] = torch.from_numpy(np.ascontiguousarray(raw[self.action_key][:, start:]))
        out["action_is_pad"] = torch.from_numpy(raw["action_is_pad"][:, start:])
        return out

    def sample(self, batch_size: int, rng: np.random.Generator, split: str = "train") -> dict[str, torch.Tensor]:
        sampler = self.train if split == "train" else self.val
        return self.batch(sampler, rng.integers(0, len(sampler), batch_size))

    def describe(self) -> dict:
        return {"store": str(self.store_path), "episodes": self.episodes, "train_episodes": self.train_episodes,
                "val_episodes": self.val_episodes, "steps": self.n_steps, "data_hash": self.data_hash}
