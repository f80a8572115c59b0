"""`robot-rl up PROFILE` / `robot-rl profiles`: run or list node graphs."""
from __future__ import annotations

import argparse

from robot_rl.config import available_profiles, load_profile
from robot_rl.config.profile import MODES
from robot_rl.ros.graph import GraphRunner, run_until_interrupted


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run a profile's node graph until Ctrl-C")
    p.add_argument("profile", nargs="?", default="sim", help="profile name or YAML path (default: sim)")
    p.add_argument("--mode", default="robot", choices=MODES,
                   help="which of the profile's nodes: robot (robot + sensors), collect, deploy, finetune")
    p.add_argument("--only", nargs="+", metavar="NODE", help="start only these nodes of the profile")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter, e.g. --set sim_robot.clock=lockstep")
    p.set_defaults(func=run_up)

    p = sub.add_parser("profiles", help="list the available hardware profiles")
    p.set_defaults(func=run_profiles)


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise SystemExit(f"robot-rl up: --set needs NODE.PARAM=VALUE, got {item!r}")
        out.setdefault(node, {})[param] = value
    return out


def run_up(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    runner = GraphRunner(profile, mode=args.mode, only=args.only, overrides=parse_overrides(args.set))
    names = ", ".join(s.name for s in runner.specs)
    print(f"robot-rl up: profile {profile.name} ({profile.source}): {names}. Ctrl-C stops all.", flush=True)
    return run_until_interrupted(runner, args.duration)


def run_profiles(args: argparse.Namespace) -> int:  # noqa: ARG001
    for name, path in available_profiles().items():
        print(f"{name:20s} {path}")
    return 0
