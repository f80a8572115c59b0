"""`robot-rl train-base`: train a BC or diffusion base policy from a store into a run directory.

Bad input (unknown/empty store, a key the config asks for that the store lacks, a bad config file,
a resume checkpoint of another robot) is reported in one line before training starts: exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-base", help="train a base policy (BC or diffusion) from a store")
    p.add_argument("--store", type=Path, required=True, help="zarr store with demonstrations")
    p.add_argument("--policy", choices=("bc", "diffusion"), default=None,
                   help="policy class (required unless --resume)")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, train_log.jsonl)")
    p.add_argument("--config", type=Path, default=None, help="YAML with 'policy:' and 'train:' sections")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time (resumable)")
    p.add_argument("--resume", type=Path, default=None, help="run dir or checkpoint to continue exactly")
    p.add_argument("--seed", type=int, default=None, help="overrides train.seed (new runs)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="overrides train.device (auto: the GPU when torch sees one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train_base)


def run_train_base(args: argparse.Namespace) -> int:
    # On a shared CPU, OpenMP threads spinning while they wait for a core made steps several times
    # slower (measured: 2 spinning threads 5x slower than 1 at load 8); passive waiting avoids it.
    # Only effective if set before torch starts its thread pool, hence before importing torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from robot_rl.data.schema import StoreError
    from robot_rl.policies.train import INPUT_ERRORS, Trainer

    if args.policy is None and args.resume is None:
        print("robot-rl train-base: error: --policy bc|diffusion is required (or --resume DIR)", file=sys.stderr)
        return BAD_INPUT
    try:
        trainer = Trainer(args.store, args.policy, args.out, config_file=args.config, steps=args.steps,
                          minutes=args.minutes, resume=args.resume, seed=args.seed, device=args.device)
    except (*INPUT_ERRORS, StoreError) as e:
        print(f"robot-rl train-base: error: {e}", file=sys.stderr)
        return BAD_INPUT
    torch.set_num_threads(trainer.tcfg.num_threads)
    d = trainer.data
    print(f"== train-base: {trainer.policy} on {len(d.episodes)} episodes ({len(d.train_episodes)} train / "
          f"{len(d.val_episodes)} val, {d.n_steps} steps) of {args.store}; obs {', '.join(d.obs_keys)}; "
          f"{sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f} M params; "
          f"{trainer.tcfg.steps} steps of batch {trainer.tcfg.batch_size} on {trainer.device} -> {args.out}")
    result = trainer.run(progress=not args.no_progress)
    print(result.summary(trainer.policy))
    return 0
