"""Replay buffers of whole episodes with per-episode n-step returns, and symmetric sampling.

Each buffer is preallocated tensors (a ring: the oldest whole episodes are evicted). n-step targets
are computed when an episode is added, inside that episode only: a success ends the episode and
stops bootstrapping; a time-out's last step has no next observation and is never sampled. Next
observations are stored as indices into the same buffer, not copies.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import numpy as np
import torch

from robot_rl.data.schema import KeySpec
from robot_rl.rl.encoder import is_camera, prepare_images


def n_step_returns(reward: np.ndarray, terminal: bool, n: int, gamma: float, steps: np.ndarray | None = None):
    """Per transition t of one episode: (return, discount, next index, valid).

    return = sum_{k<m} g_t..g_{t+k-1} r[t+k]; target = return + discount * Q(next), with g_t = gamma **
    steps[t] (the transition's length in control ticks: 1, or a held chunk's; default 1).
    terminal (success): m = min(n, T - t); discount = 0 when the window reaches the end.
    not terminal (time-out): m = min(n, T - 1 - t); the last transition (m = 0) is invalid.
    """
    r = np.asarray(reward, dtype=np.float64)
    T = len(r)
    t = np.arange(T)
    g = gamma ** (np.ones(T) if steps is None else np.asarray(steps, dtype=np.float64).reshape(T))
    m = np.minimum(n, T - t) if terminal else np.minimum(n, T - 1 - t)
    ret, weight = np.zeros(T), np.ones(T)
    for k in range(n):
        inside = k < m
        at = np.minimum(t + k, T - 1)
        ret += np.where(inside, weight * r[at], 0.0)
        weight = np.where(inside, weight * g[at], weight)
    done = terminal & (t + m == T)
    discount = np.where(done, 0.0, weight)
    valid = m > 0
    next_index = np.where(done | ~valid, t, t + m)
    return ret.astype(np.float32), discount.astype(np.float32), next_index.astype(np.int64), valid


def _torch_dtype(dtype: str) -> torch.dtype:
    return {"uint8": torch.uint8, "float32": torch.float32, "bool": torch.bool}.get(dtype, torch.float32)


class ReplayBuffer:
    """Transitions of whole episodes. Actions are stored normalised; `action` is the executed
    (combined) action the critic scores, `base` the base action the actor conditions on."""

    def __init__(self, capacity: int, obs_spec: Mapping[str, KeySpec], action_dim: int, *, n_step: int,
                 gamma: float, chunk_length: int, device: str | torch.device = "cpu"):
        self.capacity, self.n_step, self.gamma, self.chunk_length = int(capacity), n_step, gamma, chunk_length
        self.device = torch.device(device)
        self.obs_spec = dict(obs_spec)
        c, dev = self.capacity, self.device
        # observations (images) are the bulk: left uninitialised, so untouched capacity costs no RAM
        self.obs = {k: torch.empty((c, *s.shape), dtype=_torch_dtype(s.dtype), device=dev) for k, s in obs_spec.items()}
        self.base = torch.zeros((c, action_dim), device=dev)
        self.action = torch.zeros((c, action_dim), device=dev)
        self.phase = torch.zeros(c, dtype=torch.int64, device=dev)
        self.ret = torch.zeros(c, device=dev)
        self.discount = torch.zeros(c, device=dev)
        self.next_index = torch.zeros(c, dtype=torch.int64, device=dev)
        self.valid = torch.zeros(c, dtype=torch.bool)  # CPU: bookkeeping only
        self._episodes: deque[tuple[int, int]] = deque()  # (start row, length) of live episodes
        self._pos = 0
        self._valid_index = torch.zeros(0, dtype=torch.int64)
        self.episodes_added = 0
        self.steps_added = 0

    def __len__(self) -> int:
        """Sampleable transitions."""
        return int(self._valid_index.numel())

    @property
    def n_episodes(self) -> int:
        return len(self._episodes)

    def add_episode(self, obs: Mapping[str, Any], base_action: Any, action: Any, reward: Any, *,
                    terminal: bool, phase: Any = None, steps: Any = None) -> int:
        """Append one whole episode (normalised base/executed actions, per-transition reward); returns
        the number of sampleable transitions it added. `terminal`: it ended in success. `steps`: each
        transition's length in control ticks (chunk decisions), for its discount; default 1."""
        reward = np.asarray(reward, dtype=np.float32).reshape(-1)
        T = len(reward)
        if T == 0:
            return 0
        if T > self.capacity:
            raise ValueError(f"episode of {T} steps does not fit a replay buffer of {self.capacity}")
        missing = [k for k in self.obs if k not in obs]
        if missing:
            raise KeyError(f"episode lacks observation keys {missing}")
        ret, disc, nxt, valid = n_step_returns(reward, terminal, self.n_step, self.gamma, steps)
        if phase is None:
            phase = np.arange(T) % self.chunk_length
        start = self._claim(T)
        rows = slice(start, start + T)
        for k, buf in self.obs.items():
            x = torch.as_tensor(np.asarray(obs[k]) if not torch.is_tensor(obs[k]) else obs[k])
            if is_camera(k, self.obs_spec[k]):
                x = prepare_images(x.to(torch.uint8), self.obs_spec[k].shape[0])
            buf[rows] = x.reshape(T, *buf.shape[1:]).to(self.device, buf.dtype)
        for buf, x in ((self.base, base_action), (self.action, action), (self.ret, ret), (self.discount, disc)):
            buf[rows] = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(buf[rows].shape).to(self.device)
        self.phase[rows] = torch.as_tensor(np.asarray(phase, dtype=np.int64)).to(self.device)
        self.next_index[rows] = torch.as_tensor(nxt + start).to(self.device)
        self.valid[rows] = torch.as_tensor(valid)
        self._episodes.append((start, T))
        self._valid_index = self.valid.nonzero().squeeze(1)
        self.episodes_added += 1
        self.steps_added += T
        return int(valid.sum())

    def _claim(self, T: int) -> int:
        """Rows for a T-step episode at the write position (wrapping), evicting overlapped episodes."""
        if self._pos + T > self.capacity:
            self._evict(self._pos, self.capacity)
            self._pos = 0
        start = self._pos
        self._evict(start, start + T)
        self._pos = start + T
        return start

    def _evict(self, lo: int, hi: int) -> None:
        keep = deque()
        for s, n in self._episodes:
            if s < hi and s + n > lo:
                self.valid[s:s + n] = False
            else:
                keep.append((s, n))
        self._episodes = keep
        self.valid[lo:hi] = False

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        pick = torch.randint(len(self), (n,), generator=generator)
        idx = self._valid_index[pick].to(self.device)
        nxt = self.next_index[idx]
        return {
            "obs": {k: v[idx] for k, v in self.obs.items()},
            "next_obs": {k: v[nxt] for k, v in self.obs.items()},
            "base": self.base[idx], "phase": self.phase[idx], "action": self.action[idx],
            "reward": self.ret[idx], "discount": self.discount[idx],
            "next_base": self.base[nxt], "next_phase": self.phase[nxt],
        }


def concat_batches(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in parts[0]:
        if isinstance(parts[0][key], dict):
            out[key] = {k: torch.cat([p[key][k] for p in parts]) for k in parts[0][key]}
        else:
            out[key] = torch.cat([p[key] for p in parts])
    return out


def sample_batch(online: ReplayBuffer, demo: ReplayBuffer | None, batch_size: int, demo_fraction: float,
                 generator: torch.Generator | None = None) -> dict[str, Any]:
    """Symmetric sampling: round(batch_size * demo_fraction) from the demos, the rest online (all
    from whichever buffer is non-empty when the other is empty). `is_demo` marks the rows."""
    n_demo = int(round(batch_size * demo_fraction)) if demo is not None and len(demo) else 0
    if len(online) == 0:
        n_demo = batch_size
    n_online = batch_size - n_demo
    parts, flags = [], []
    if n_online:
        parts.append(online.sample(n_online, generator))
        flags.append(torch.zeros(n_online, dtype=torch.bool))
    if n_demo:
        if demo is None or len(demo) == 0:
            raise ValueError("both replay buffers are empty: nothing to train on yet")
        parts.append(demo.sample(n_demo, generator))
        flags.append(torch.ones(n_demo, dtype=torch.bool))
    batch = concat_batches(parts) if len(parts) > 1 else parts[0]
    batch["is_demo"] = torch.cat(flags).to(batch["reward"].device)
    return batch


def batch_to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: batch_to(v, device) if isinstance(v, Mapping) else v.to(device, non_blocking=True)
            for k, v in batch.items()}
