"""The fine-tuning session report (`robot-rl report RUN_DIR`), without ROS.

Reads what a `robot-rl finetune` run left in RUN_DIR (session.jsonl, eval_base.json, eval_final.json,
run.json) plus the store's episode metadata, and writes RUN_DIR/summary.json, RUN_DIR/report/*.png
and RUN_DIR/report.html. Layout: load.py (inputs), aggregate.py (numbers), plots*.py (figures),
html.py (the page).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

REPORT_DIR = "report"


def write_report(run_dir: Path, store: Path | None = None) -> Path:
    """Write summary.json, report/*.png and report.html into `run_dir`; returns report.html's path.
    `store` overrides run.json's store path. Bad input raises robot_rl.config.ConfigError."""
    from robot_rl.report.aggregate import summarize
    from robot_rl.report.html import write_html
    from robot_rl.report.load import load_run
    from robot_rl.report.plots import write_plots

    run_dir = Path(run_dir)
    data = load_run(run_dir, store)
    summary = summarize(data)
    sections = write_plots(data, run_dir / REPORT_DIR)
    summary["plots"] = {s["name"]: s["file"] for s in sections}
    summary["not_recorded"] = {s["name"]: s["missing"] for s in sections if s["missing"]}
    path = run_dir / "summary.json"
    tmp = path.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return write_html(run_dir, summary, sections)


__all__ = ["write_report", "REPORT_DIR"]
