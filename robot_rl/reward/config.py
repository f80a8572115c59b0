"""Typed configuration of the reward classifier: model, frame labelling, training, threshold choice.

Frame labels (SERL-style, decided here once): in a successful episode the last `positive_window`
frames are positive and every earlier frame negative; every frame of a failed episode is negative.
Recorded episodes stop right at the first success (the episode manager ends them there), so the
success *state* lives in the last few frames only; a small window keeps the label on states that
really are (almost) the goal, a large one would teach the classifier to fire while the object is
still on its way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.config.typed import check
from robot_rl.rl.config import EncoderConfig


def _default_encoder() -> EncoderConfig:
    # The residual's DrQ-style encoder (robot_rl/rl/encoder.py), sized down: one frame, one decision.
    return EncoderConfig(low_dim_hidden=64, low_dim_features=32, image_size=64, conv_channels=16,
                         image_features=32, random_shift=4)


@dataclass
class RewardModelConfig:
    obs_keys: list[str] = field(default_factory=list)  # [] = every camera + tactile stream + obs/joint_pos
    encoder: EncoderConfig = field(default_factory=_default_encoder)
    head_hidden: int = 64

    def validate(self) -> None:
        check(self.head_hidden >= 1, "must be >= 1", "head_hidden")
        for i, k in enumerate(self.obs_keys):
            check(k.startswith("obs/"), f"must be a store key starting with 'obs/', got {k!r}", f"obs_keys[{i}]")


@dataclass
class RewardTrainConfig:
    positive_window: int = 3  # K: frames at the end of a successful episode labelled positive
    consecutive: int = 2  # M: the classifier fires after M consecutive frames above the threshold
    on_time_slack: int = 3  # a fire this many frames before the positive window still counts as on time
    steps: int = 2000  # optimizer steps (upper bound: early stopping usually ends sooner)
    batch_size: int = 64  # half positive, half negative frames (class-balanced sampling)
    hard_fraction: float = 0.5  # of each half, drawn in proportion to the frame's last loss (hard examples)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    eval_every: int = 100  # steps between validation passes
    patience: int = 8  # validation passes without a better validation AP before stopping early
    val_fraction: float = 0.2  # of each class's episodes: threshold choice and early stopping
    test_fraction: float = 0.2  # of each class's episodes: the reported held-out numbers
    min_precision: float = 0.95  # per-episode precision the threshold must reach on validation
    sources: list[str] = field(default_factory=list)  # episode sources to use ([] = all: demo, rollout, ...)
    seed: int = 0
    threads: int = 1  # torch threads (1 is fastest on a shared 2-core machine)

    def validate(self) -> None:
        for name in ("positive_window", "consecutive", "steps", "batch_size", "eval_every", "patience", "threads"):
            check(getattr(self, name) >= 1, f"must be >= 1, got {getattr(self, name)}", name)
        check(self.consecutive <= self.positive_window,
              f"must be <= positive_window ({self.positive_window}): a successful episode has only that many "
              "positive frames", "consecutive")
        check(self.on_time_slack >= 0, "must be >= 0", "on_time_slack")
        check(self.batch_size >= 2, "must be >= 2 (half positive, half negative)", "batch_size")
        check(0 <= self.hard_fraction <= 1, "must be in [0, 1]", "hard_fraction")
        check(self.lr > 0, "must be > 0", "lr")
        check(self.weight_decay >= 0, "must be >= 0", "weight_decay")
        for name in ("val_fraction", "test_fraction"):
            check(0 < getattr(self, name) < 0.5, "must be in (0, 0.5)", name)
        check(self.val_fraction + self.test_fraction < 0.8, "val_fraction + test_fraction must leave >= 20 % to train",
              "test_fraction")
        check(0 < self.min_precision <= 1, "must be in (0, 1]", "min_precision")
