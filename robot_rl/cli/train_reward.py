"""`robot-rl train-reward`: train the success classifier the episode manager can label episodes with.

Bad input (no such store, a store of another setup, a store without both successful and failed
episodes, too few episodes, an existing output directory) is one line and exit code 2 before any
training. Prints the held-out precision/recall table; DIR holds the classifier (config.json +
model.safetensors) and metrics.json.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from robot_rl.config import ConfigError, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-reward", help="train a success classifier (reward) from labelled episodes")
    p.add_argument("--store", type=Path, required=True, help="store with successful and failed episodes")
    p.add_argument("--out", type=Path, required=True, help="new directory for the classifier and metrics.json")
    p.add_argument("--profile", default="sim", help="the setup the classifier is for (default: sim)")
    p.add_argument("--steps", type=int, default=None, help="maximum optimizer steps (early stopping may end sooner)")
    p.add_argument("--positive-window", type=int, default=None, metavar="K",
                   help="last K frames of a successful episode are positive (default 3)")
    p.add_argument("--consecutive", type=int, default=None, metavar="M",
                   help="fire after M consecutive frames above the threshold (default 2)")
    p.add_argument("--min-precision", type=float, default=None,
                   help="per-episode precision the threshold must reach on validation (default 0.95)")
    p.add_argument("--obs-keys", nargs="+", default=None, metavar="KEY",
                   help="observation keys (default: every camera and tactile stream + obs/joint_pos)")
    p.add_argument("--sources", nargs="+", default=None, metavar="SOURCE",
                   help="only episodes of these sources (default: all, e.g. demo rollout intervention)")
    p.add_argument("--image-size", type=int, default=None, help="camera frames resized to this (default 64)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="episode split, sampling and initialisation")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_reward)


def _configs(args: argparse.Namespace):
    from robot_rl.config.typed import from_dict, to_dict
    from robot_rl.reward.config import RewardModelConfig, RewardTrainConfig

    model, train = to_dict(RewardModelConfig()), to_dict(RewardTrainConfig())
    for flag, key in (("steps", "steps"), ("positive_window", "positive_window"), ("consecutive", "consecutive"),
                      ("min_precision", "min_precision"), ("sources", "sources"), ("batch_size", "batch_size"),
                      ("seed", "seed"), ("threads", "threads")):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    if args.obs_keys is not None:
        model["obs_keys"] = args.obs_keys
    if args.image_size is not None:
        model["encoder"]["image_size"] = args.image_size
    try:
        return from_dict(RewardModelConfig, model), from_dict(RewardTrainConfig, train)
    except ConfigError as e:
        raise ConfigError(e.problem, "--" + e.field.split(".")[-1].replace("_", "-")) from None


def run_train_reward(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_base: spinning OpenMP threads on a busy CPU
    if args.out.exists():
        raise ConfigError(f"{args.out} already exists; give a new directory (a reward classifier is never "
                          "overwritten)", "--out")
    profile = load_profile(args.profile)
    model_cfg, cfg = _configs(args)
    import torch

    from robot_rl.reward.train import train_reward

    torch.set_num_threads(cfg.threads)
    start = time.monotonic()
    result = train_reward(args.store, profile, args.out, model_cfg=model_cfg, cfg=cfg, progress=not args.no_progress)
    print(result.table())
    print(f"train-reward: {time.monotonic() - start:.0f} s -> {result.out} (classifier) and "
          f"{result.out / 'metrics.json'}; use it with episode_manager label: classifier, "
          f"reward_checkpoint: {result.out}")
    return 0
