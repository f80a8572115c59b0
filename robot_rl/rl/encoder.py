"""The residual's own small observation encoder (separate from the frozen base's encoder).

Low-dim keys (joint_pos, joint_vel, tactile flattened) are standardised with statistics stored as
buffers, then go through an MLP; each camera goes through a tiny conv net with random-shift
augmentation during training. The encoder is trained only through the critic loss: the actor sees
detached features, so the slow actor learning rate never drags the representation.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.data.schema import KeySpec
from robot_rl.rl.config import EncoderConfig

CAMERA_PREFIX = "obs/camera_"
BASE_FEATURES = "base/features"  # the base encoder's features at the chunk start (EncoderConfig.base_features)
MIN_STD = 0.1  # floor of the low-dim standardisation (released recipe): near-constant inputs stay tame


def is_camera(key: str, spec: KeySpec) -> bool:
    return key.startswith(CAMERA_PREFIX) and spec.is_image


def obs_spec_from_keys(keys: Mapping[str, KeySpec], cfg: EncoderConfig) -> dict[str, KeySpec]:
    """The per-step observation layout the residual consumes, from a store's key specs: the chosen
    obs/* keys (default all but depth), camera frames at the encoder's image size."""
    chosen = list(cfg.obs_keys) or sorted(k for k in keys if k.startswith("obs/") and not k.startswith("obs/depth_"))
    missing = [k for k in chosen if k not in keys]
    if missing:
        raise KeyError(f"observation keys not in the store: {', '.join(missing)}")
    spec = {}
    for k in chosen:
        s = keys[k]
        if is_camera(k, s):
            if cfg.use_cameras:
                spec[k] = KeySpec((cfg.image_size, cfg.image_size, s.shape[2]), "uint8")
        elif np.dtype(s.dtype).kind in "biuf":
            spec[k] = KeySpec(s.shape, "float32")
    if not spec:
        raise KeyError("no usable observation keys (need at least one obs/* key)")
    return spec


def prepare_images(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W, C) frames at size x size (area resampling); unchanged when already there.
    Used by both the replay ingestion and the policy, so training and deployment match."""
    if frames.shape[-3] == size and frames.shape[-2] == size:
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="area")
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """DrQ random shift: replicate-pad by `pad` and crop back at a random integer offset per sample."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=generator.device if generator else "cpu")
    shifts = shifts.to(x.device)
    rows = shifts[0, :, None] + torch.arange(h, device=x.device)
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class ConvEncoder(nn.Module):
    """84x84 -> 3 small convs -> LayerNorm'd features (DrQ-style trunk)."""

    def __init__(self, size: int, in_channels: int, channels: int, features: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
        )
        s = (((size - 3) // 2 + 1) - 2 - 3) // 2 + 1
        self.trunk = nn.Sequential(nn.Linear(channels * s * s, features), nn.LayerNorm(features), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.convs(x).flatten(1))


class ObsEncoder(nn.Module):
    def __init__(self, obs_spec: Mapping[str, KeySpec], cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.camera_keys = sorted(k for k, s in obs_spec.items() if is_camera(k, s))
        self.low_dim_keys = sorted(k for k in obs_spec if k not in self.camera_keys)
        self.low_dim_sizes = [int(np.prod(obs_spec[k].shape)) for k in self.low_dim_keys]
        low_dim = sum(self.low_dim_sizes)
        self.register_buffer("low_dim_mean", torch.zeros(low_dim))
        self.register_buffer("low_dim_std", torch.ones(low_dim))
        self.low_dim_mlp: nn.Module = nn.Identity()
        out = low_dim
        if low_dim and cfg.low_dim_hidden:
            self.low_dim_mlp = nn.Sequential(
                nn.Linear(low_dim, cfg.low_dim_hidden), nn.LayerNorm(cfg.low_dim_hidden), nn.ReLU(),
                nn.Linear(cfg.low_dim_hidden, cfg.low_dim_features), nn.LayerNorm(cfg.low_dim_features))
            out = cfg.low_dim_features
        self.cameras = nn.ModuleList(
            ConvEncoder(cfg.image_size, obs_spec[k].shape[2], cfg.conv_channels, cfg.image_features)
            for k in self.camera_keys)
        self.out_dim = out + cfg.image_features * len(self.camera_keys)

    def set_low_dim_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardisation statistics of the concatenated low-dim keys (sorted key order)."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(self.low_dim_mean.shape)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(self.low_dim_std.shape).clamp_min(MIN_STD)
        self.low_dim_mean.copy_(mean)
        self.low_dim_std.copy_(std)

    def low_dim(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        first = obs[(self.low_dim_keys or self.camera_keys)[0]]
        parts = [obs[k].reshape(first.shape[0], -1).float() for k in self.low_dim_keys]
        if not parts:
            return first.new_zeros((first.shape[0], 0), dtype=torch.float32)
        return (torch.cat(parts, dim=1) - self.low_dim_mean) / self.low_dim_std

    def forward(self, obs: Mapping[str, torch.Tensor], augment: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        feats = [self.low_dim_mlp(self.low_dim(obs))]
        for key, net in zip(self.camera_keys, self.cameras):
            frames = prepare_images(obs[key], self.cfg.image_size)
            x = frames.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
            if augment and self.cfg.random_shift:
                x = random_shift(x, self.cfg.random_shift, generator)
            feats.append(net(x))
        return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]
