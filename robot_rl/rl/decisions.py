"""What one residual decision is: a control tick (`decision: step`, the recipe) or a whole base chunk
(`decision: chunk`: one residual chosen at the chunk's first tick and held for its steps).

Why chunks: the base's actions are position targets and it pulls back toward its own plan, so one
tick's residual barely changes the outcome and a per-tick critic is nearly flat in the action; a
residual held for a chunk moves where the arm goes (docs/residual_rl.md, the long-horizon toy).
The policy node and the learner must cut an episode into the same decisions: `ChunkHold` is the
rule while acting, `decision_starts` the same rule over a recorded episode.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np


class ChunkHold:
    """A value held for each base chunk: a new one at phase 0, or whenever the phase does not advance
    (a chunk started without its phase 0 being seen). Holds the exploration noise
    (`explore_hold: chunk`) or, with `decision: chunk`, the whole residual."""

    def __init__(self):
        self.value: Any = None
        self._phase = -1

    def at(self, phase: int, make: Callable[[], Any]) -> Any:
        if self.value is None or phase == 0 or phase <= self._phase:
            self.value = make()
        self._phase = phase
        return self.value

    def release(self) -> None:
        """Take a new value at the next tick (the ticks in between were not this hold's: a human drove)."""
        self.value = None


def decision_starts(phase: np.ndarray) -> np.ndarray:
    """Indices of the ticks where ChunkHold takes a new value, for one episode's phases."""
    phase = np.asarray(phase, dtype=np.int64).reshape(-1)
    if len(phase) == 0:
        return np.zeros(0, np.int64)
    new = np.ones(len(phase), bool)
    new[1:] = (phase[1:] == 0) | (phase[1:] <= phase[:-1])
    return np.flatnonzero(new)


def chunk_phases(recorded: np.ndarray | None, length: int, chunk_length: int) -> np.ndarray:
    """Each tick's index in its base chunk: as recorded by the policy node (`chunk_phase`), else (a
    demo, or a store from before phases were recorded) chunks back to back from the episode start,
    which is what the policy node executes in lockstep and what demo relabelling assumes."""
    if recorded is not None:
        recorded = np.asarray(recorded, np.int64).reshape(-1)
        if len(recorded) == length and length and recorded.min() >= 0:
            return recorded
    return np.arange(length, dtype=np.int64) % max(1, chunk_length)


def episode_transitions(decision: str, obs: Mapping[str, np.ndarray], base_n: np.ndarray, action_n: np.ndarray,
                        reward: np.ndarray, phase: np.ndarray, *, action_scale: float, project: bool,
                        gamma: float) -> dict[str, Any]:
    """One recorded episode (per tick: observations, normalised base and executed actions, reward,
    chunk phase) as the keyword arguments of ReplayBuffer.add_episode.

    `project`: the executed action is clipped into base +- action_scale (what the actor can produce).
    `step`: one transition per tick. `chunk`: one per decision: the observation and base action of its
    first tick, the taken residual = the mean of (action - base) over its ticks (the constant offset
    closest to what was executed: exact for the policy's held residual, the average deviation for a
    human's), the reward discounted within the chunk, and its length in ticks (the buffer discounts
    by gamma ** length per decision)."""
    base_n, action_n = np.asarray(base_n, np.float32), np.asarray(action_n, np.float32)
    reward = np.asarray(reward, np.float32).reshape(-1)
    phase = np.asarray(phase, np.int64).reshape(-1)
    if decision == "step":
        if project:
            action_n = np.clip(action_n, base_n - action_scale, base_n + action_scale)
        return dict(obs=obs, base_action=base_n, action=action_n, reward=reward, phase=phase)
    if decision != "chunk":
        raise ValueError(f"decision must be step|chunk, got {decision!r}")
    starts = decision_starts(phase)
    lengths = np.diff(np.append(starts, len(reward)))
    residual = np.add.reduceat(action_n - base_n, starts, axis=0) / lengths[:, None]
    if project:
        residual = np.clip(residual, -action_scale, action_scale)
    base = base_n[starts]
    discounts = np.concatenate([gamma ** np.arange(n) for n in lengths])
    return dict(obs={k: np.asarray(v)[starts] for k, v in obs.items()}, base_action=base,
                action=np.clip(base + residual, -1.0, 1.0).astype(np.float32),
                reward=np.add.reduceat(reward * discounts, starts).astype(np.float32),
                phase=np.zeros(len(starts), np.int64), steps=lengths)


__all__ = ["ChunkHold", "chunk_phases", "decision_starts", "episode_transitions"]
