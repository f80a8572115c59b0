"""`robot-rl demo`: placeholder until the demo stage lands."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the one-command main job on the simulated robot")
    p.set_defaults(func=lambda a: 0)
