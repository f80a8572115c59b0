"""`robot-rl report RUN_DIR`: the fine-tuning session report (summary.json, report/*.png, report.html)
from what `robot-rl finetune` and `robot-rl eval --out` left in the run directory."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report, plots and summary.json of a fine-tuning run directory")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="directory holding session.jsonl")
    p.add_argument("--store", type=Path, default=None,
                   help="store the session recorded into (default: run.json's 'store'); used to cross-check labels")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    import json

    from robot_rl.report import write_report

    page = write_report(args.run_dir, args.store)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    session, check = summary["session"], summary["store_check"]

    def rate(block) -> str:
        if not block:
            return "not recorded"
        lo, hi = block["ci95"]
        return f"{100 * block['success_rate']:.1f} % ({100 * lo:.0f}-{100 * hi:.0f} %, n={block['episodes']})"

    print(f"== report {args.run_dir}: base {rate(summary['base'])} -> fine-tuned {rate(summary['final'])}; "
          f"session {session['episodes']} episodes, {session['env_steps']} env steps")
    if check["recorded"] and not check["match"]:
        print(f"warning: {len(check['mismatches'])} session episode(s) disagree with the store: "
              f"{check['mismatches'][0]['problem']}")
    missing = summary["not_recorded"]
    if missing:
        print(f"not recorded: {', '.join(missing)}")
    print(f"== wrote {page}, {args.run_dir / 'summary.json'}")
    return 0
