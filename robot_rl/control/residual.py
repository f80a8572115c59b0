"""The residual at every control tick (no ROS): validated weight swaps and base + residual.

Weights arrive from the learner at any time; each message is validated completely (metadata,
architecture, checksum, shapes, finite values) into a new module before one reference assignment
swaps it in, so a tick never sees half-loaded weights and a rejected message leaves the running
residual untouched. Without weights the command is the base action.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from robot_rl.config import ConfigError
from robot_rl.data.recording import store_layout
from robot_rl.data.schema import KeySpec
from robot_rl.rl import WeightsRejected, architecture, load_config, policy_from_weights, preset
from robot_rl.rl.encoder import BASE_FEATURES, obs_spec_from_keys
from robot_rl.rl.decisions import ChunkHold
from robot_rl.rl.networks import exploration_noise
from robot_rl.rl.offset import GatedOffset, OffsetSpace


@dataclass
class ResidualCounters:
    accepted: int = 0
    rejected: int = 0
    last_reject_reason: str = ""
    version: int = -1
    incarnation: float = 0.0  # the learner's start time: a restarted learner's weights supersede older ones
    step: int = 0


class ResidualRunner:
    def __init__(self, profile, chunk_length: int, rl_preset: str, seed: int = 0, rl_config: str = "",
                 base_feature_dim: int = 0):
        cfg = load_config(rl_config).replace(chunk_length=chunk_length) if rl_config else \
            preset(rl_preset, chunk_length=chunk_length)
        keys, _ = store_layout(profile)
        spec = obs_spec_from_keys(keys, cfg.encoder)
        self.wants_base_features = cfg.encoder.base_features  # the caller adds them to each tick's obs
        self.features_key = BASE_FEATURES
        if self.wants_base_features:
            if not base_feature_dim:
                raise ConfigError("encoder.base_features needs the base policy's feature size", "rl_config")
            spec[BASE_FEATURES] = KeySpec((int(base_feature_dim),), "float32")
        # decision: offset: the actor changes a gated, persistent offset (rl/offset.py), not the command
        self.gated = GatedOffset(OffsetSpace(cfg.offset, profile)) if cfg.decision == "offset" else None
        self.expected = architecture(cfg, spec, self.gated.space.dim if self.gated else len(profile.robot.joints))
        self.policy = None
        self.meta: dict = {}
        self.counters = ResidualCounters()
        self.generator = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()  # guards the counters; the policy swap itself is one assignment
        self.per_chunk = cfg.decision == "chunk"  # one residual per base chunk (the architecture checks it)
        self._held_noise = ChunkHold()  # exploration noise held for the chunk (explore_hold: chunk)
        self._held_residual = ChunkHold()  # decision: chunk
        self._episode_noise: torch.Tensor | None = None  # explore_hold: episode
        torch.set_num_threads(1)

    def offer(self, data: bytes, metadata: dict) -> bool:
        """Validate and swap in new weights (newer versions only); False if rejected."""
        try:
            try:
                incarnation = float(metadata.get("incarnation", 0.0))
            except (TypeError, ValueError):
                raise WeightsRejected("metadata", "incarnation must be a number") from None
            newer = (incarnation, metadata.get("version", -1)) > (self.counters.incarnation, self.counters.version)
            if not newer and self.policy is not None:
                raise WeightsRejected("metadata", f"version {metadata.get('version')} is not newer than "
                                                  f"{self.counters.version}")
            policy = policy_from_weights(data, metadata, self.expected)
        except WeightsRejected as e:
            with self._lock:
                self.counters.rejected += 1
                self.counters.last_reject_reason = str(e)
            return False
        self.policy, self.meta = policy, dict(metadata)  # the swap: ticks read one or the other
        with self._lock:
            self.counters.accepted += 1
            self.counters.version = int(metadata["version"])
            self.counters.incarnation = incarnation
            self.counters.step = int(metadata.get("step", 0))
        return True

    def new_episode(self) -> None:
        """A new episode: decide afresh and, with `explore_hold: episode`, draw its exploration anew."""
        self.interrupted()
        self._episode_noise = None
        if self.gated is not None:
            self.gated.reset()

    def interrupted(self) -> None:
        """Ticks were not the residual's (a human drove): the next tick decides afresh."""
        self._held_residual.release()
        self._held_noise.release()

    def apply(self, obs: dict[str, np.ndarray], base: np.ndarray, phase: int, explore: bool) -> np.ndarray:
        """The residual (raw joint units) for this tick; the command is base + residual, clipped by the caller.
        With `decision: chunk` the residual chosen at the chunk's first tick, held for its other ticks;
        with `decision: offset` the gated offset, changed by the actor when a decision is due."""
        if self.gated is not None:
            if self.gated.tick(base) and self.policy is not None:  # the actor's "base" is the current offset
                self.gated.set(self._act(obs, self.gated.offset, 0, explore).action[0].numpy())
            return self.gated.residual(base)
        if self.per_chunk:
            return self._held_residual.at(phase, lambda: self._residual(obs, base, phase, explore))
        return self._residual(obs, base, phase, explore)

    def _residual(self, obs: dict[str, np.ndarray], base: np.ndarray, phase: int, explore: bool) -> np.ndarray:
        if self.policy is None:
            return np.zeros_like(base)
        out = self._act(obs, base, phase, explore)
        # The pure residual in joint units: the caller adds it to the base and clips to the joint limits,
        # so a zero residual reproduces the base exactly even outside the learner's widened action range.
        return (out.residual_normalized[0] * self.policy.action_norm.half_range).numpy().astype(np.float64)

    @torch.no_grad()
    def _act(self, obs: dict[str, np.ndarray], base: np.ndarray, phase: int, explore: bool):
        """The policy on one observation and (raw) base action, with the learner's exploration."""
        policy, meta = self.policy, self.meta
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in obs.items()}
        kind = meta.get("exploration", "gaussian") if explore else "none"
        std, clip, uniform = meta.get("explore_std", 0.05), meta.get("explore_clip", 0.3), meta.get("warmup_noise", 0.2)
        noise = None  # None: the policy draws afresh this tick

        def draw() -> torch.Tensor:
            return exploration_noise((1, len(base)), kind, std=std, clip=clip, scale=uniform,
                                     generator=self.generator, device="cpu")

        hold = meta.get("explore_hold")
        if kind != "none" and hold == "episode":  # one draw per episode
            if self._episode_noise is None:
                self._episode_noise = draw()
            noise = self._episode_noise
        elif kind != "none" and hold == "chunk" and not self.per_chunk and self.gated is None:  # one per chunk
            noise = self._held_noise.at(phase, draw)
        return policy(tensors, torch.from_numpy(np.asarray(base, np.float32))[None], torch.tensor([phase]),
                      explore=kind, std=std, clip=clip, uniform=uniform, generator=self.generator, noise=noise)
