"""The success classifier: the residual's observation encoder (robot_rl/rl/encoder.py: a small conv net
per camera with random-shift augmentation, low-dim keys through an MLP) and a two-layer head giving
one logit per frame. One frame in, one probability out.

Low-dim keys are normalised first by the policies' `Normalizer` with statistics from the training
frames (joint positions min-max to [-1, 1], taxel grids mean/std over the grid), kept as JSON in the
checkpoint: the gripper's few centimetres of travel must not drown under the encoder's std floor.

Camera frames are resized to the encoder's size by `prepare_images` (area resampling), the function
the dataset used when it loaded the store, so a live frame and a stored one give the same pixels.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from robot_rl.data.schema import KeySpec
from robot_rl.policies.encoders import stream_kind
from robot_rl.policies.normalizer import Normalizer, compute_stats
from robot_rl.reward.config import RewardModelConfig
from robot_rl.reward.detector import SuccessDetector
from robot_rl.rl.encoder import ObsEncoder, is_camera


def encoder_obs_spec(obs: Mapping[str, KeySpec], image_size: int) -> dict[str, KeySpec]:
    """The per-frame layout the encoder sees: cameras at image_size x image_size, the rest float32."""
    return {k: KeySpec((image_size, image_size, s.shape[2]), "uint8") if is_camera(k, s) else KeySpec(s.shape, "float32")
            for k, s in obs.items()}


def normalizer_stats(obs: Mapping[str, KeySpec], frames: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Normalizer statistics of the low-dim keys from training frames (N, *shape)."""
    modes = {k: "meanstd" if stream_kind(k, tuple(s.shape), s.dtype) == "tactile" else "minmax"
             for k, s in obs.items() if not is_camera(k, s)}
    return compute_stats({k: frames[k] for k in modes}, modes)


class RewardNet(nn.Module):
    def __init__(self, obs: Mapping[str, KeySpec], cfg: RewardModelConfig, stats: Mapping[str, dict]):
        super().__init__()
        self.obs = dict(obs)
        low_dim = sorted(k for k, s in obs.items() if not is_camera(k, s))
        missing = [k for k in low_dim if k not in stats]
        if missing:
            raise ValueError(f"no normalizer statistics for {', '.join(missing)}")
        self.normalizer = Normalizer({k: stats[k] for k in low_dim})
        self.encoder = ObsEncoder(encoder_obs_spec(obs, cfg.encoder.image_size), cfg.encoder)
        self.head = nn.Sequential(nn.Linear(self.encoder.out_dim, cfg.head_hidden), nn.ReLU(),
                                  nn.Linear(cfg.head_hidden, 1))

    def forward(self, obs: Mapping[str, torch.Tensor], augment: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """{key: (B, *shape)} (uint8 frames at any size, float low-dim in store units) -> logits (B,)."""
        x = {k: self.normalizer.normalize(k, v.float()) if k in self.normalizer else v for k, v in obs.items()}
        return self.head(self.encoder(x, augment=augment, generator=generator)).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, obs: Mapping[str, np.ndarray], batch: int = 256) -> np.ndarray:
        """Probabilities of N frames (eval mode, batched)."""
        n = len(next(iter(obs.values())))
        out = np.empty(n, dtype=np.float32)
        for s in range(0, n, batch):
            x = {k: torch.from_numpy(np.ascontiguousarray(v[s:s + batch])) for k, v in obs.items()}
            out[s:s + batch] = torch.sigmoid(self(x)).numpy()
        return out


class RewardClassifier:
    """A loaded classifier (robot_rl.reward.checkpoint.load_classifier): frames in store units and
    dtypes in, success probability out, plus the detector rule chosen on validation episodes."""

    def __init__(self, net: RewardNet, *, path, profile: str, joint_names: list[str], threshold: float,
                 consecutive: int, positive_window: int, config: dict):
        self.net = net.eval()
        self.path, self.profile, self.joint_names = path, profile, list(joint_names)
        self.obs: dict[str, KeySpec] = dict(net.obs)
        self.obs_keys = sorted(self.obs)
        self.threshold, self.consecutive, self.positive_window = float(threshold), int(consecutive), int(positive_window)
        self.config = config

    def detector(self) -> SuccessDetector:
        return SuccessDetector(self.threshold, self.consecutive)

    def _check(self, obs: Mapping[str, np.ndarray], batched: bool) -> dict[str, np.ndarray]:
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks {', '.join(missing)} (the reward classifier needs "
                           f"{', '.join(self.obs_keys)})")
        out = {}
        for k in self.obs_keys:
            a = np.asarray(obs[k])
            want = tuple(self.obs[k].shape)
            got = tuple(a.shape[1:] if batched else a.shape)
            if got != want:
                raise ValueError(f"{k}: the reward classifier expects frames of shape {want}, got {got}")
            out[k] = a if a.dtype == np.uint8 else a.astype(np.float32)
        return out

    def probabilities(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N, *shape) per key -> (N,) probabilities."""
        return self.net.probabilities(self._check(obs, batched=True))

    def probability(self, obs: Mapping[str, np.ndarray]) -> float:
        """One frame (no batch axis) -> its success probability."""
        x = self._check(obs, batched=False)
        return float(self.net.probabilities({k: v[None] for k, v in x.items()})[0])
