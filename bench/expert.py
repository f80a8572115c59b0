"""Scripted-expert benchmark: success rate (Wilson 95 % interval) and episode length, no rendering.

Prints one JSON line, e.g.
{"bench": "expert", "episodes": 50, "noise": 1.0, "success_rate": 0.84, "ci95": [0.71, 0.92], ...}
Episode i uses seed `--seed + i`, so a run is reproducible.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--profile", default="sim")
    args = ap.parse_args(argv)

    from robot_rl.config import load_profile
    from robot_rl.stats import wilson
    from robot_rl.sim import ScriptedExpert, SimRobot, run_expert_episode

    profile = load_profile(args.profile)
    robot = SimRobot(profile, seed=args.seed, render=False)
    expert = ScriptedExpert(profile, seed=args.seed, noise=args.noise)
    start = time.perf_counter()
    results = [run_expert_episode(robot, expert, args.seed + i, args.max_steps) for i in range(args.episodes)]
    wall = time.perf_counter() - start
    robot.close()
    wins = sum(r["success"] for r in results)
    lo, hi = wilson(wins, len(results))
    print(json.dumps({
        "bench": "expert",
        "episodes": len(results),
        "noise": args.noise,
        "success_rate": round(wins / max(1, len(results)), 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "mean_steps": round(sum(r["steps"] for r in results) / max(1, len(results)), 2),
        "wall_s": round(wall, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
