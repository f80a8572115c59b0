"""`robot-rl`: the one command. Subcommands live in their own modules and register here."""
from __future__ import annotations

import argparse
import sys

from robot_rl.config import ConfigError
from robot_rl.cli import calibrate, collect, demo, evaluate, finetune, report, store, train_base, train_reward, up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rl", description=__doc__.split(":", 1)[1].strip())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (up, collect, demo, store, evaluate, train_base, train_reward, finetune, calibrate, report):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"robot-rl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robot-rl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
