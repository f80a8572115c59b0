"""The inference API the policy node, the evaluators and the residual learner call.

    policy = load_policy("runs/diffusion/final", profile)   # or a run dir: final/ or newest step
    chunk = policy.predict({"obs/camera_front": (obs_horizon, 128, 128, 3) uint8, ...}, seed=0)
    # chunk: (pred_horizon, action_dim) joint targets; chunk[0] is for the newest observation's step

Observations come in store units and dtypes (uint8 images, float32 others) for each key in
`obs_keys`; extra keys are ignored. A leading batch axis is accepted too: (B, obs_horizon, ...) ->
(B, pred_horizon, action_dim).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from robot_rl.policies.checkpoint import Checkpoint, checkpoint_hash, load_checkpoint
from robot_rl.policies.spec import SpecError, check_profile


class BasePolicy:
    """A frozen, loaded base policy (eval mode, EMA weights for diffusion)."""

    def __init__(self, ckpt: Checkpoint, profile=None):
        self.checkpoint = ckpt
        self.model = ckpt.build_model()
        self.policy_class = ckpt.policy
        self.config, self.spec = ckpt.config, ckpt.spec
        self.normalizer = self.model.normalizer  # shared with the residual actor's action space
        self.obs_keys: list[str] = sorted(ckpt.spec.obs)
        self.obs_shapes = {k: tuple(v.shape) for k, v in ckpt.spec.obs.items()}
        self.obs_horizon: int = ckpt.config.obs_horizon
        self.pred_horizon: int = ckpt.config.pred_horizon
        self.exec_horizon: int = ckpt.config.exec_horizon
        self.action_dim: int = ckpt.spec.action_dim
        self.joint_names: list[str] = list(ckpt.spec.joint_names)
        self.control_rate_hz: float = ckpt.spec.control_rate_hz
        self.feature_dim: int = self.model.feature_dim
        self.checkpoint_hash: str = checkpoint_hash(ckpt.path)
        lower, upper = np.asarray(ckpt.spec.lower, np.float64), np.asarray(ckpt.spec.upper, np.float64)
        if profile is not None:  # clip to the tighter of the trained and the current limits
            lower = np.maximum(lower, [j.lower for j in profile.robot.joints])
            upper = np.minimum(upper, [j.upper for j in profile.robot.joints])
        self.lower, self.upper = lower.astype(np.float32), upper.astype(np.float32)
        self._generator = torch.Generator().manual_seed(0)

    def _tensors(self, obs: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], bool]:
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks {', '.join(missing)} (the policy needs {', '.join(self.obs_keys)})")
        out, batched = {}, None
        for key in self.obs_keys:
            a = np.asarray(obs[key])
            step_shape = self.obs_shapes[key]
            is_batched = a.ndim == len(step_shape) + 2
            if a.shape[-len(step_shape):] != step_shape or a.ndim not in (len(step_shape) + 1, len(step_shape) + 2) \
                    or a.shape[-len(step_shape) - 1] != self.obs_horizon:
                raise ValueError(f"{key}: expected ({self.obs_horizon}, {', '.join(map(str, step_shape))}) "
                                 f"(optionally with a leading batch axis), got {a.shape}")
            if batched is not None and batched != is_batched:
                raise ValueError("either every observation key has a batch axis or none has")
            batched = is_batched
            if self.spec.obs[key].dtype == "uint8" and a.dtype != np.uint8:
                raise ValueError(f"{key}: expected uint8 images, got {a.dtype}")
            t = torch.from_numpy(np.ascontiguousarray(a if a.dtype == np.uint8 else a.astype(np.float32)))
            out[key] = t if batched else t.unsqueeze(0)
        return out, bool(batched)

    @torch.no_grad()
    def predict(self, obs: Mapping[str, np.ndarray], seed: int | None = None, steps: int | None = None) -> np.ndarray:
        """Action chunk (pred_horizon, action_dim) float32 in joint units, clipped to the joint limits.
        Diffusion: `seed` makes the sample deterministic (None draws from the policy's own generator);
        `steps` overrides the configured DDIM step count. BC ignores both."""
        x, batched = self._tensors(obs)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else self._generator
        actions = self.model.predict_actions(x, generator=gen, steps=steps).numpy()
        actions = np.clip(actions, self.lower, self.upper).astype(np.float32)
        return actions if batched else actions[0]

    @torch.no_grad()
    def features(self, obs: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Encoder features of the observation history: (feature_dim,) or (B, feature_dim)."""
        x, batched = self._tensors(obs)
        f = self.model.encode(x)
        return f if batched else f[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.policy_class}, {self.checkpoint.path}, obs {self.obs_horizon}, "
                f"pred {self.pred_horizon}, exec {self.exec_horizon}, sha256 {self.checkpoint_hash[:12]})")


class BCPolicy(BasePolicy):
    pass


class DiffusionPolicy(BasePolicy):
    @property
    def inference_steps(self) -> int:
        return self.config.inference_steps


def load_policy(checkpoint_dir: str | Path, profile=None) -> BasePolicy:
    """Load a checkpoint (or a run dir's final/newest one). With `profile` (a Profile or a profile
    name), the policy's spec is checked against it first: SpecError names every difference."""
    ckpt = load_checkpoint(checkpoint_dir)
    if isinstance(profile, str):
        from robot_rl.config import load_profile

        profile = load_profile(profile)
    if profile is not None:
        check_profile(ckpt.spec, profile)
    cls = {"bc": BCPolicy, "diffusion": DiffusionPolicy}.get(ckpt.policy)
    if cls is None:
        raise SpecError(f"{ckpt.path}: unknown policy class {ckpt.policy!r}")
    return cls(ckpt, profile)
