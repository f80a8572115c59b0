"""Configs shared by every base policy: observation encoders, horizons, normalisation, training.

Plain dataclasses for `robot_rl.config.typed` (a YAML file is checked field by field). The policy
classes add their own head/network fields in `policies/<name>/config.py`. Defaults are sized for a
2-core CPU budget (about 15 minutes of training on ~100 sim demos); see docs/policies.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robot_rl.config.typed import check

NormMode = Literal["minmax", "meanstd", "identity"]


@dataclass
class ImageEncoderConfig:
    """ResNet-18-style (basic blocks, GroupNorm) with a CPU-sized width and depth."""

    resize: int = 84  # images are resized (antialiased) to resize x resize first; 0 keeps the size
    crop: int = 76  # random crop in training, centre crop at inference; 0 = no crop
    # Three stages (ResNet-18 has four: 64..512, [2, 2, 2, 2]): the keypoint map stays 5x5 at a
    # 76-pixel crop instead of 3x3; on the sim task BC missed no grasp with it and cost less per step
    # (docs/policies.md, "Encoder and training length").
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    stem_pool: bool = True  # ResNet's 3x3 max-pool after the stem (a quarter of the trunk's cost)
    groups: int = 8  # GroupNorm groups (BatchNorm breaks EMA; diffusion_policy uses GroupNorm too)
    pool: Literal["spatial_softmax", "avg"] = "spatial_softmax"
    keypoints: int = 32  # spatial-softmax keypoints (x, y each)
    out_dim: int = 64  # per-camera feature size
    share: bool = False  # one encoder for every camera

    def validate(self) -> None:
        check(len(self.channels) == len(self.blocks) and len(self.channels) > 0,
              "channels and blocks need one entry per stage", "channels")
        check(all(c % self.groups == 0 for c in self.channels),
              f"every stage width must be divisible by groups={self.groups}", "channels")
        check(all(b >= 1 for b in self.blocks), "each stage needs at least one block", "blocks")
        check(self.resize >= 0 and self.crop >= 0, "must be >= 0", "crop")
        check(not (self.resize and self.crop) or self.crop <= self.resize,
              f"crop {self.crop} must not exceed resize {self.resize}", "crop")
        check(self.out_dim > 0 and self.keypoints > 0, "must be positive", "out_dim")


@dataclass
class TactileEncoderConfig:
    """Small conv over the taxel grid (touch location matters, so the grid stays a grid)."""

    channels: int = 16
    out_dim: int = 32


@dataclass
class ProprioEncoderConfig:
    hidden: int = 64
    out_dim: int = 64


@dataclass
class ObservationConfig:
    """Which store keys the policy sees and how each kind of stream is encoded."""

    keys: list[str] = field(default_factory=list)  # empty: every camera + tactile key + obs/joint_pos
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    tactile: TactileEncoderConfig = field(default_factory=TactileEncoderConfig)
    proprio: ProprioEncoderConfig = field(default_factory=ProprioEncoderConfig)
    proprio_norm: NormMode = "minmax"
    tactile_norm: NormMode = "meanstd"  # one mean/std over the whole grid (taxels are mostly zero)

    def validate(self) -> None:
        check(len(set(self.keys)) == len(self.keys), "duplicate keys", "keys")
        check(all(k.startswith("obs/") for k in self.keys), "observation keys start with 'obs/'", "keys")


@dataclass
class PolicyConfig:
    """Horizons follow diffusion_policy: the chunk's first action is the one for the current step."""

    obs_horizon: int = 2
    pred_horizon: int = 16
    exec_horizon: int = 8
    action_key: str = "action"
    action_norm: NormMode = "minmax"
    observation: ObservationConfig = field(default_factory=ObservationConfig)

    def validate(self) -> None:
        check(self.obs_horizon >= 1, "must be at least 1", "obs_horizon")
        check(self.pred_horizon >= 1, "must be at least 1", "pred_horizon")
        check(1 <= self.exec_horizon <= self.pred_horizon,
              f"must be in 1..pred_horizon ({self.pred_horizon}), got {self.exec_horizon}", "exec_horizon")


@dataclass
class TrainConfig:
    steps: int = 3000  # total optimizer steps (the LR schedule spans these)
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 200
    grad_clip: float = 1.0  # 0 = off
    ema: bool = False
    ema_power: float = 0.75  # diffusion_policy's EMA warm-up: decay = 1 - (1 + step) ** -power
    ema_max_decay: float = 0.9999
    val_fraction: float = 0.1  # whole episodes held out
    val_every: int = 250
    val_batches: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2  # periodic ones kept besides the final checkpoint
    log_every: int = 25
    seed: int = 0
    episodes: Literal["success", "all"] = "success"  # train on successful episodes only by default
    sources: list[str] = field(default_factory=lambda: ["demo"])
    max_episodes: int = 0  # use only the first N selected episodes (0 = all): demo-count studies
    num_threads: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU when torch sees one

    def validate(self) -> None:
        check(self.steps >= 1, "must be at least 1", "steps")
        check(self.batch_size >= 1, "must be at least 1", "batch_size")
        check(self.lr > 0, "must be positive", "lr")
        check(0 <= self.val_fraction < 1, "must be in [0, 1)", "val_fraction")
        check(self.val_every >= 1 and self.checkpoint_every >= 1 and self.log_every >= 1,
              "intervals must be at least 1", "val_every")
        check(0 < self.ema_max_decay < 1, "must be in (0, 1)", "ema_max_decay")
        check(self.keep_checkpoints >= 0 and self.max_episodes >= 0, "must be >= 0", "keep_checkpoints")
        check(self.num_threads >= 1, "must be at least 1", "num_threads")
