"""`robot-rl demo`: the whole loop on the simulated robot, through the real ROS graph, in one command.

Stages (each one the same code path as its own subcommand): collect demonstrations with the scripted
expert -> train the base policy -> evaluate the base -> residual fine-tuning session (policy +
learner + recorder + episode manager + sim) -> evaluate base + residual -> session report (HTML +
summary.json). Every stage records its result in RUN_DIR/run.json, so `--resume RUN_DIR` after a
Ctrl-C (or a failure) skips what is done and restarts the interrupted stage cleanly.

By default every stage after collection runs on a robot that drifted (`--drift`), the case residual
fine-tuning is for: the base learnt from the old robot's demonstrations, the residual adapts it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from robot_rl.cli.finetune import write_run_info
from robot_rl.config import ConfigError


@dataclass(frozen=True)
class DemoBudget:
    demos: int
    base_steps: int
    eval_episodes: int
    finetune_minutes: float
    eval_parallel: int = 2  # graphs side by side: ~1.6x the evaluation episodes per minute on 2 cores


# ~17.5 min on 2 cores (+ the venv): lockstep collection makes 100 demonstrations a 2-minute stage. Evaluations get
# the minutes fine-tuning does not need: in-process studies (docs/residual_rl.md) gain as much by 5k-10k
# env steps as by 18k, while a 30-episode evaluation cannot tell a 15 -> 28 % gain from chance.
QUICK = DemoBudget(demos=100, base_steps=1000, eval_episodes=80, finetune_minutes=6.0)
# The demo's robot changed after its demonstrations: its waist settles 0.08 rad (4.6 deg) off every
# target, ~2 cm at the cube's distance. The base, trained on the old robot's demonstrations, misses
# by that much; the residual learns the correction from success rewards alone (README, "make demo").
DEFAULT_DRIFT = "waist=0.08"
LONG = DemoBudget(demos=100, base_steps=2500, eval_episodes=100, finetune_minutes=60.0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on the simulated robot: collect, train, eval, fine-tune, report")
    p.add_argument("--profile", default="sim")
    p.add_argument("--run-dir", type=Path, default=None, help="where everything goes (default runs/demo-TIME)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted demo")
    p.add_argument("--long", action="store_true", help="a longer, stronger run (100 demos, 2500 base steps, 60 min RL)")
    p.add_argument("--store", type=Path, default=None, help="reuse this demonstration store (skip collection)")
    p.add_argument("--base", type=Path, default=None, help="reuse this base checkpoint (skip base training)")
    p.add_argument("--policy", choices=("bc", "diffusion"), default="bc", help="base policy class")
    p.add_argument("--demos", type=int, default=None, help="expert episodes to collect")
    p.add_argument("--base-steps", type=int, default=None, help="base policy optimizer steps")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    p.add_argument("--finetune-minutes", type=float, default=None, help="fine-tuning session length")
    p.add_argument("--eval-parallel", type=int, default=None, metavar="N",
                   help="evaluation graphs side by side (own ROS domains ROS_DOMAIN_ID + k; default 2)")
    p.add_argument("--preset", default="cpu_adapt", help="residual RL preset (cpu_adapt: for a changed robot)")
    p.add_argument("--drift", default=DEFAULT_DRIFT, metavar="JOINT=RAD[,...]",
                   help="the robot changed after the demonstrations: these joints settle this far from their targets "
                        f"in every stage after collection (default {DEFAULT_DRIFT}; 'none' for the unchanged robot)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from robot_rl.cli.main import main as cli

    run_dir = args.resume or args.run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if args.resume is not None and not (run_dir / "run.json").is_file():
        raise ConfigError(f"{run_dir} is not a demo run directory (no run.json); start without --resume")
    info = json.loads((run_dir / "run.json").read_text()) if args.resume is not None else {}
    budget = LONG if args.long else QUICK
    settings = info.get("settings") or {  # a resumed demo continues with the settings it started with
        "profile": args.profile, "policy": args.policy, "preset": args.preset,
        "collect": args.store is None, "train_base": args.base is None,
        "demos": args.demos or budget.demos, "base_steps": args.base_steps or budget.base_steps,
        "eval_episodes": args.eval_episodes or budget.eval_episodes,
        "finetune_minutes": args.finetune_minutes or budget.finetune_minutes, "drift": args.drift,
        "eval_parallel": args.eval_parallel or budget.eval_parallel}
    profile, policy, preset = settings["profile"], settings["policy"], settings["preset"]
    demos, base_steps = settings["demos"], settings["base_steps"]
    episodes, ft_minutes = settings["eval_episodes"], settings["finetune_minutes"]
    drift = ["--drift", settings.get("drift") or "none"]
    graphs = str(min(episodes, settings.get("eval_parallel", 1)))
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROS_HOME", str((run_dir / "ros").resolve()))
    done = set(info.get("done", []))
    store = Path(info.get("store") or args.store or run_dir / "demos.zarr")
    base = Path(info.get("base_checkpoint") or args.base or run_dir / "base" / "final")
    learner = run_dir / "learner_run"
    log = run_dir / "graph.log"
    write_run_info(run_dir, store=str(store.resolve()), base_checkpoint=str(base.resolve()), profile=profile,
                   preset=preset, settings=settings, done=sorted(done), drift=settings.get("drift") or "none")

    stages = [
        ("collect", f"collect {demos} expert demonstrations through ROS", settings["collect"],
         ["collect", "--profile", profile, "--store", str(store), "--episodes", str(demos), "--log", str(log)]),
        ("train_base", f"train the {policy} base policy ({base_steps} steps)", settings["train_base"],
         ["train-base", "--store", str(store), "--policy", policy, "--out", str(base.parent),
          "--steps", str(base_steps)]),
        ("eval_base", f"evaluate the base ({episodes} episodes, lockstep)", True,
         ["eval", "--profile", profile, "--checkpoint", str(base), "--episodes", str(episodes),
          "--parallel", graphs, "--out", str(run_dir / "eval_base.json"), "--log", str(log), *drift]),
        ("finetune", f"residual RL fine-tuning session ({ft_minutes:g} min)", True,
         ["finetune", "--profile", profile, "--base", str(base), "--store", str(store), "--preset", preset,
          "--minutes", str(ft_minutes), "--run-dir", str(run_dir), "--no-report", "--log", str(log), *drift]),
        ("eval_final", f"evaluate base + residual ({episodes} episodes)", True,
         ["eval", "--profile", profile, "--checkpoint", str(base), "--residual", str(learner),
          "--episodes", str(episodes), "--parallel", graphs, "--out", str(run_dir / "eval_final.json"),
          "--log", str(log), *drift]),
    ]
    print(f"== robot_rl demo on profile {profile}: run dir {run_dir}"
          + (f"; robot drift after collection: {settings['drift']}" if settings.get("drift", "none") != "none" else "")
          + (f" (resuming; done: {', '.join(sorted(done))})" if done else ""))
    todo = [s for s in stages if s[2]]
    for i, (name, title, _, argv) in enumerate(todo, 1):
        if name in done:
            print(f"-- [{i}/{len(todo) + 1}] {title}: done earlier, skipped")
            continue
        print(f"-- [{i}/{len(todo) + 1}] {title}", flush=True)
        if name == "train_base" and (base / "config.json").is_file():  # finished just before an interrupt
            done.add(name)
            continue
        if name == "train_base" and (base.parent / "checkpoints").exists():  # interrupted: continue exactly
            argv = ["train-base", "--resume", str(base.parent)]
        t0 = time.monotonic()
        try:
            code = cli(argv)
        except KeyboardInterrupt:
            print(f"\n== demo interrupted in stage '{name}'; continue with: robot-rl demo --resume {run_dir}")
            return 130
        if code == 130:
            print(f"\n== demo interrupted in stage '{name}'; continue with: robot-rl demo --resume {run_dir}")
            return 130
        if code != 0:
            print(f"== stage '{name}' failed (exit {code}); logs: {log}; continue with: robot-rl demo --resume {run_dir}")
            return code
        done.add(name)
        write_run_info(run_dir, stages={name: round(time.monotonic() - t0, 1)}, done=sorted(done))

    from robot_rl.report import write_report

    print(f"-- [{len(todo) + 1}/{len(todo) + 1}] session report")
    html = write_report(run_dir, store)
    summary = json.loads((run_dir / "summary.json").read_text())
    print_summary(summary, run_dir, html)
    return 0


def _rate(block: dict | None) -> str:
    if not block or not block.get("episodes"):
        return "not run"
    lo, hi = block.get("ci95", [0, 0])
    return (f"{100 * block['success_rate']:5.1f} %  ({block['successes']}/{block['episodes']}, "
            f"95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)")


def _paired(block: dict | None) -> str:
    if not block:
        return "not comparable (different layouts)"
    return (f"{block['gained']} failed -> succeeded, {block['lost']} succeeded -> failed "
            f"(of {block['episodes']}; exact McNemar p = {block['mcnemar_p']:.2g})")


def print_summary(summary: dict, run_dir: Path, html: Path) -> None:
    session = summary.get("session", {})
    stages = summary.get("stages_s", {})
    rows = [("robot drift (after collection)", summary.get("drift") or "none"),
            ("base policy", _rate(summary.get("base"))),
            ("base + residual", _rate(summary.get("final"))),
            ("same layouts, episode by episode", _paired(summary.get("paired"))),
            ("fine-tuning episodes", f"{session.get('episodes', 0)} ({session.get('env_steps', 0)} env steps)"),
            ("session success (last 20)", f"{100 * (session.get('success_rate_last20') or 0):.0f} %"),
            ("total time", f"{sum(stages.values()) / 60:.1f} min ("
             + ", ".join(f"{k} {v / 60:.1f}" for k, v in stages.items()) + ")")]
    width = max(len(k) for k, _ in rows)
    print("\n== robot_rl demo summary")
    for k, v in rows:
        print(f"   {k:<{width}}  {v}")
    print(f"== report: {html}\n   summary: {run_dir / 'summary.json'}")
