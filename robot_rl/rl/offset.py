"""`decision: offset`: the residual as a persistent correction that the actor changes in steps, acting
only while the base does one thing (the gate: its gripper command closed, i.e. carrying).

Why: the base's actions are position targets it keeps pulling back to, so a per-tick residual barely
changes the outcome and its critic stays flat. Here each decision is a change to an offset that
persists, so it has a lasting effect; the offset is zero until the gate opens and frozen from the gate's
close on (a placement's correction must survive the release). About 8 larger decisions per episode
plus `residual_l2` on the change never fell below the base in the study behind this mode
(docs/residual_rl.md, "Fewer, larger decisions").

The agent is the usual ResidualTD3 with its "base action" = the offset before the decision and its
action = the offset after it (normalised by the offset range), so its residual is the change. The policy
node (control/residual.py) and the learner (rl/feed.py) cut an episode into the same decisions with
`GatedOffset`; the learner recovers each decision's offset from the recorded command - base.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from robot_rl.config import ConfigError
from robot_rl.rl.config import OffsetConfig


class OffsetSpace:
    """Where the offset lives and how it becomes a joint-space residual: `joint` (the chosen joints) or
    `tcp_xy` (the tool frame's horizontal position, through the position Jacobian at the base's command;
    a 2-vector asks for no vertical motion there)."""

    def __init__(self, cfg: OffsetConfig, profile):
        names = list(profile.robot.joint_names)
        self.cfg, self.n_joints, self.range = cfg, len(names), float(cfg.range)
        gate = cfg.gate_joint or profile.robot.gripper_joint
        if gate not in names:
            raise ConfigError(f"the gate joint {gate!r} is not a robot joint ({', '.join(names)}); name one "
                              "(offset.gate_joint) or give the profile a robot.gripper_joint", "offset.gate_joint")
        self.gate_index, self.gate_below = names.index(gate), float(cfg.gate_below)
        joints = cfg.joints or [n for n in names if n != gate]
        unknown = [j for j in joints if j not in names]
        if unknown:
            raise ConfigError(f"{unknown} are not robot joints ({', '.join(names)})", "offset.joints")
        self.joints = np.array([names.index(j) for j in joints])
        self.fk = self.frame = None
        if cfg.space == "tcp_xy":
            from robot_rl.calibration.kinematics import ChainFK

            if not profile.kinematics.described:
                raise ConfigError(f"offset.space tcp_xy needs the arm's kinematics, but profile {profile.name!r} "
                                  "has no 'kinematics:' section; describe the chain or use offset.space: joint",
                                  "offset.space")
            self.fk = ChainFK(profile.kinematics, names)
            frames = [link.name for link in profile.kinematics.chain]
            if cfg.frame and cfg.frame not in frames:
                raise ConfigError(f"{cfg.frame!r} is not a frame of the kinematic chain ({', '.join(frames)})",
                                  "offset.frame")
            self.frame = cfg.frame or frames[-1]
        self.dim = 2 if self.fk is not None else len(self.joints)

    def gate_open(self, base: np.ndarray) -> bool:
        return float(base[self.gate_index]) < self.gate_below

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """d(frame position)/d(offset joints), (3, k), from one FK pass: axis x (frame - joint origin) for a
        revolute joint, the axis for a prismatic one (a joint outside the chain moves nothing)."""
        poses = self.fk.poses(np.asarray(q, np.float64))
        tip = poses[self.frame][:3, 3]
        names, axes, arms, sliding, which = self.fk.joint_names, [], [], [], []
        for link, axis in zip(self.fk.spec.chain, self.fk._axes):
            if link.joint:
                T = poses[link.name]
                axes.append(T[:3, :3] @ axis)
                arms.append(tip - T[:3, 3])
                sliding.append(link.type == "prismatic")
                which.append(names.index(link.joint))
            if link.name == self.frame:
                break
        out = np.zeros((3, len(self.joints)))
        if not axes:
            return out
        axes, arms = np.array(axes), np.array(arms)
        cols = np.where(np.array(sliding)[:, None], axes, np.cross(axes, arms))  # one cross call: ~us
        for c, j in enumerate(self.joints):
            if j in which:
                out[:, c] = cols[which.index(j)]
        return out

    def to_joints(self, offset: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The joint-space residual (all joints) that realises `offset` at the base's command."""
        out = np.zeros(self.n_joints)
        offset = np.asarray(offset, np.float64)
        if not np.any(offset):
            return out
        if self.fk is None:
            out[self.joints] = offset
        else:
            J, v = self.jacobian(base), np.array([offset[0], offset[1], 0.0])
            try:  # the least-norm joint motion, pinv(J) @ v, without an SVD per tick
                out[self.joints] = J.T @ np.linalg.solve(J @ J.T, v)
            except np.linalg.LinAlgError:  # a singular arm pose
                out[self.joints] = np.linalg.pinv(J) @ v
        return out

    def from_joints(self, residual: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The offset a joint-space residual realises at the base's command (to_joints' inverse)."""
        residual = np.asarray(residual, np.float64)[self.joints]
        if self.fk is None:
            return residual
        if not np.any(residual):
            return np.zeros(2)
        return (self.jacobian(base) @ residual)[:2]


class GatedOffset:
    """One episode's offset: zero until the gate opens; a decision at the gate's first tick and every
    `every` ticks while it stays open; frozen from its first close to the episode's end."""

    def __init__(self, space: OffsetSpace):
        self.space = space
        self.reset()

    def reset(self) -> None:
        self.offset = np.zeros(self.space.dim)
        self.state, self._open_ticks = "before", 0

    def tick(self, base: np.ndarray) -> bool:
        """Advance with this tick's base action; True if a decision is due at this tick."""
        is_open = self.space.gate_open(base)
        if self.state == "before" and is_open:
            self.state, self._open_ticks = "open", 0
        elif self.state == "open" and not is_open:
            self.state = "frozen"
        if self.state != "open":
            return False
        due = self._open_ticks % self.space.cfg.every == 0
        self._open_ticks += 1
        return due

    def set(self, offset: np.ndarray) -> None:
        r = self.space.range
        self.offset = np.clip(np.asarray(offset, np.float64).reshape(self.space.dim), -r, r)

    def residual(self, base: np.ndarray) -> np.ndarray:
        """This tick's joint-space residual (zero before the gate opens)."""
        return self.space.to_joints(self.offset, base)


def offset_transitions(space: OffsetSpace, obs: Mapping[str, np.ndarray], base: np.ndarray, action: np.ndarray,
                       success: bool, *, action_scale: float, gamma: float) -> dict[str, Any] | None:
    """One recorded episode (raw per-tick base and executed actions) as the keyword arguments of
    ReplayBuffer.add_episode, one transition per offset decision (None: the gate never opened).

    Offsets are normalised by the range; the taken change is projected into what the actor can produce
    (+- action_scale). The outcome is settled once no decision follows: the last decision gets the success
    discounted over the ticks to the episode's end and ends the episode for the critic."""
    base, action = np.asarray(base, np.float64), np.asarray(action, np.float64)
    gate = GatedOffset(space)
    ticks = np.array([t for t in range(len(base)) if gate.tick(base[t])], np.int64)
    if len(ticks) == 0:
        return None
    taken = np.stack([space.from_joints(action[t] - base[t], base[t]) for t in ticks]) / space.range
    new, prev = np.zeros_like(taken), np.zeros(space.dim)
    for i, target in enumerate(taken):
        new[i] = np.clip(np.clip(target, prev - action_scale, prev + action_scale), -1.0, 1.0)
        prev = new[i]
    steps = np.diff(np.append(ticks, len(base)))
    reward = np.zeros(len(ticks), np.float32)
    reward[-1] = float(success) * gamma ** (steps[-1] - 1)
    steps[-1] = 1
    return dict(obs={k: np.asarray(v)[ticks] for k, v in obs.items()},
                base_action=np.concatenate([np.zeros((1, space.dim)), new[:-1]]).astype(np.float32),
                action=new.astype(np.float32), reward=reward, phase=np.zeros(len(ticks), np.int64), steps=steps)


__all__ = ["GatedOffset", "OffsetSpace", "offset_transitions"]
