"""`robot-rl demo`: the main job on the simulated robot, through the real ROS graph.

Current stage: bring up the sim robot graph (separate processes, real DDS), drive the scripted
expert through ROS for a few episodes, and report what flowed: per-topic rates and latencies,
safety-envelope counters and the expert's success. Later stages (collection into the store, base
training, residual fine-tuning) extend this command.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from robot_rl.stats import wilson
from robot_rl.config import load_profile
from robot_rl.ros import topics
from robot_rl.ros.graph import GraphRunner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the one-command main job on the simulated robot")
    p.add_argument("--profile", default="sim")
    p.add_argument("--episodes", type=int, default=5, help="scripted-expert episodes to drive through ROS")
    p.add_argument("--run-dir", type=Path, default=None, help="where to write logs and summary.json")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:

    from robot_rl.ros.sim_client import RobotClient
    from robot_rl.sim import ScriptedExpert

    profile = load_profile(args.profile)
    run_dir = args.run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROS_HOME", str((run_dir / "ros").resolve()))
    print(f"== robot_rl demo: profile {profile.name}, run dir {run_dir}")
    print("-- stage 1/2: bring up the sim robot graph (real processes, real DDS)")
    runner = GraphRunner(profile, log_path=run_dir / "graph.log").start()
    client = RobotClient.open(profile, "demo_client")
    try:
        t0 = time.monotonic()
        problem = client.wait_ready(timeout=90)
        if problem:
            print(f"error: the sim graph did not come up: {problem} (see {run_dir / 'graph.log'})")
            return 1
        print(f"   graph up in {time.monotonic() - t0:.1f} s: {len(client.watched)} sensor topics")

        print(f"-- stage 2/2: scripted expert drives the robot through /robot/command for {args.episodes} episodes")
        expert = ScriptedExpert(profile, seed=0)
        results = []
        start_diag = client.diagnostics("sim_robot")
        for topic in client.watched:
            client.probe.clear(topic) if not topic.endswith("camera_info") else None
        bar = tqdm(range(args.episodes), unit="episode", dynamic_ncols=True)
        for episode in bar:
            results.append(client.run_expert_episode(expert, seed=episode))
            wins = sum(r["success"] for r in results)
            bar.set_postfix(success=f"{wins}/{len(results)}", steps=results[-1]["steps"])
        end_diag = client.diagnostics("sim_robot")
        streams = {t: client.probe.stats(t) for t in client.watched if not t.endswith("camera_info")}
    finally:
        client.close()
        code = runner.stop()

    wins = sum(r["success"] for r in results)
    lo, hi = wilson(wins, len(results))
    expected = {topics.JOINT_STATES: profile.robot.state_rate_hz,
                **{topics.camera_color(c.name): c.fps for c in profile.cameras},
                **{topics.camera_depth(c.name): c.fps for c in profile.cameras if c.depth},
                **{topics.tactile_image(t.name): t.rate_hz for t in profile.tactile}}
    print("\n   topic                                   rate (Hz)  target   msgs   latency p50/p99 (ms)")
    for topic, s in streams.items():
        target = expected.get(topic)
        print(f"   {topic:40s} {s['rate_hz']:8.1f} {target or float('nan'):7.1f} {s['count']:7d}"
              f"   {s['latency_p50_ms']:6.2f} / {s['latency_p99_ms']:6.2f}")
    counters = ["commands_accepted", "commands_rejected", "position_clips", "velocity_limited", "stale_holds"]
    delta = {k: int(end_diag[k]) - int(start_diag[k]) for k in counters}
    print("   safety envelope: " + ", ".join(f"{k} {v}" for k, v in delta.items()))
    print(f"   scripted expert through ROS: {wins}/{len(results)} successes "
          f"({100 * wins / max(1, len(results)):.0f} %, 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)")
    summary = {"profile": profile.name, "episodes": results, "expert_success_rate": wins / max(1, len(results)),
               "expert_success_ci95": [lo, hi], "streams": streams, "safety": delta, "graph_exit_code": code}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"== done: {run_dir / 'summary.json'}" + ("" if code == 0 else f" (graph exit code {code})"))
    return code
