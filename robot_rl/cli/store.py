"""`robot-rl store …`: inspect, check, repair, plot, film, export and merge recorded stores.

Thin over robot_rl.data.tools. Exit codes: 0 done / store sound, 1 `check` found problems,
2 bad input (not a store, no such episode or key, output exists): one line, no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect, check, repair, plot, export and merge stores")
    cmds = p.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")

    c = cmds.add_parser("info", help="table of episodes and totals")
    c.add_argument("path", type=Path)
    c.set_defaults(func=_run(_info))

    c = cmds.add_parser("check", help="validate schema and consistency (exit 0 ok, 1 problems, 2 not a store)")
    c.add_argument("path", type=Path)
    c.add_argument("--deep", action="store_true", help="also decode every committed row and check stamps")
    c.set_defaults(func=_run(_check))

    c = cmds.add_parser("repair", help="drop uncommitted rows and stray temp files (needs no writer running)")
    c.add_argument("path", type=Path)
    c.set_defaults(func=_run(_repair))

    c = cmds.add_parser("plot", help="PNG of an episode's low-dim streams over time")
    c.add_argument("path", type=Path)
    c.add_argument("--episode", type=int, required=True, metavar="I")
    c.add_argument("--out", type=Path, help="PNG path (default: <store>_ep<I>.png next to the store)")
    c.set_defaults(func=_run(_plot))

    c = cmds.add_parser("video", help="MP4 of an episode's cameras side by side")
    c.add_argument("path", type=Path)
    c.add_argument("--episode", type=int, required=True, metavar="I")
    c.add_argument("--out", type=Path, help="MP4 path (default: <store>_ep<I>.mp4 next to the store)")
    c.add_argument("--fps", type=float, help="frame rate (default: the store's control rate, i.e. real time)")
    c.set_defaults(func=_run(_video))

    c = cmds.add_parser("export-lerobot", help="write a LeRobot dataset (format v2.1, mp4v videos)")
    c.add_argument("path", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--task", help="task text of every episode (default: from the store's profile)")
    c.set_defaults(func=_run(_export))

    c = cmds.add_parser("merge", help="merge stores of one schema into a new store")
    c.add_argument("out_path", type=Path)
    c.add_argument("in_paths", type=Path, nargs="+", metavar="IN_PATH")
    c.set_defaults(func=_run(_merge))


def _run(func):
    """Bad input becomes one line on stderr and exit code 2 (the library's messages name the store)."""
    def run(args: argparse.Namespace) -> int:
        from robot_rl.data.schema import StoreError
        from robot_rl.data.tools.common import ToolError

        try:
            return int(func(args) or 0)
        except (ToolError, StoreError) as e:
            print(f"robot-rl store {args.store_command}: error: {e}", file=sys.stderr)
            return BAD_INPUT
    return run


def _info(args) -> int:
    from robot_rl.data.tools.summary import info

    print(info(args.path))
    return 0


def _check(args) -> int:
    from robot_rl.data.tools.summary import CHECK_OK, check_report

    code, problems = check_report(args.path, deep=args.deep)
    for p in problems:
        print(p)
    if code == CHECK_OK:
        print(f"{args.path}: ok" + (" (deep)" if args.deep else ""))
    elif code == BAD_INPUT:
        return code
    else:
        repairable = any("repair" in p for p in problems)
        hint = "; `robot-rl store repair` removes what an interrupted write left" if repairable else ""
        print(f"{args.path}: {len(problems)} problem(s){hint}")
    return code


def _repair(args) -> int:
    from robot_rl.data.tools.summary import repair_report

    print("\n".join(repair_report(args.path)))
    return 0


def _plot(args) -> int:
    from robot_rl.data.tools.plot import plot_episode

    out = plot_episode(args.path, args.episode, args.out)
    print(f"wrote {out} (episode {args.episode} of {args.path})")
    return 0


def _video(args) -> int:
    from robot_rl.data.tools.video import episode_video

    r = episode_video(args.path, args.episode, args.out, args.fps)
    print(f"wrote {r['out']}: {r['frames']} frames {r['width']}x{r['height']} at {r['fps']:g} fps "
          f"({', '.join(r['cameras'])})")
    return 0


def _export(args) -> int:
    from robot_rl.data.tools.lerobot import CODEBASE_VERSION, export_lerobot

    r = export_lerobot(args.path, args.out_dir, task=args.task)
    if r["skipped"]:
        print(f"not exported (no LeRobot equivalent): {', '.join(r['skipped'])}")
    jitter = r["max_timestamp_jitter_s"]
    note = (f"up to {jitter * 1e3:.1f} ms off 1/fps: load with LeRobot's tolerance_s >= {jitter:.2g}" if jitter > 1e-4
            else "within LeRobot's default tolerance_s")
    print(f"wrote LeRobot {CODEBASE_VERSION} dataset {r['out']}: {r['episodes']} episodes, {r['frames']} frames, "
          f"{r['videos']} videos at {r['fps']} fps; timestamps are the capture stamps ({note})")
    return 0


def _merge(args) -> int:
    from robot_rl.data.tools.merge import merge

    r = merge(args.out_path, args.in_paths)
    for w in r["warnings"]:
        print(f"warning: {w}")
    print(f"merged {len(args.in_paths)} stores into {r['out']}: {r['episodes']} episodes, {r['steps']} steps")
    return 0
