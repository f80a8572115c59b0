"""`robot-rl eval --parallel N`: N sim + policy graphs side by side, merged into one evaluation.

In lockstep the sim and the policy take turns, so one graph leaves much of a 2-core machine idle;
two graphs finish ~1.6x the episodes per minute, which buys the episodes a paired base-vs-fine-tuned
comparison needs. Each extra graph runs in a `robot-rl eval` child process on its own ROS domain
(ROS_DOMAIN_ID + k) so the graphs cannot hear each other, and on its own layouts (seed + k); the
first runs in this process and shows the progress bar. Results are concatenated in graph order,
so two evaluations with the same --seed and --parallel ran the same layouts in the same order.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

DOMAINS = 233  # Fast DDS: ROS_DOMAIN_ID 0..232
STOP_S = 30.0  # a child stops its own graph on SIGINT; give it that long before forcing it


def graph_argv(args: argparse.Namespace, *, episodes: int, seed: int, out: Path, log: Path | None) -> list[str]:
    """The one-graph `robot-rl eval` command line for one share of the episodes."""
    argv = ["eval", "--checkpoint", str(args.checkpoint), "--profile", str(args.profile), "--episodes", str(episodes),
            "--max-steps", str(args.max_steps), "--clock", args.clock, "--seed", str(seed), "--out", str(out)]
    if args.residual is not None:
        argv += ["--residual", str(args.residual)]
    if args.drift:
        argv += ["--drift", args.drift]
    if log is not None:
        argv += ["--log", str(log)]
    return argv


def shares(episodes: int, graphs: int) -> list[int]:
    return [episodes // graphs + (k < episodes % graphs) for k in range(graphs)]


def run_parallel(args: argparse.Namespace) -> int:
    from robot_rl.cli.evaluate import write_results
    from robot_rl.cli.main import main as cli
    from robot_rl.ros.graph import die_with_parent

    n = args.parallel
    domain = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    domains = [(domain + k) % DOMAINS for k in range(n)]
    work = Path(tempfile.mkdtemp(prefix="robot_rl_eval_"))
    parts = [work / f"graph{k}.json" for k in range(n)]
    counts = shares(args.episodes, n)
    children: list[subprocess.Popen] = []
    try:
        for k in range(1, n):
            log = args.log.with_name(f"{args.log.stem}.graph{k}{args.log.suffix}") if args.log else None
            argv = graph_argv(args, episodes=counts[k], seed=args.seed + k, out=parts[k], log=log)
            with open(work / f"graph{k}.out", "w") as out:
                children.append(subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", *argv], stdout=out,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 env={**os.environ, "ROS_DOMAIN_ID": str(domains[k])},
                                                 # Ctrl-C reaches them once, from _stop, not twice
                                                 start_new_session=True, preexec_fn=die_with_parent))
        print(f"== {n} graphs side by side (ROS domains {', '.join(map(str, domains))}; "
              f"{' + '.join(map(str, counts))} episodes); the progress bar follows the first", flush=True)
        codes = [cli(graph_argv(args, episodes=counts[0], seed=args.seed, out=parts[0], log=args.log))]
        if codes[0] != 0:  # interrupted (130) or failed: stop the others now rather than wait for them
            return codes[0]
        if any(c.poll() is None for c in children):
            print(f"== waiting for the other {n - 1} graph(s)", flush=True)
        codes += [c.wait() for c in children]
        failed = [k for k, code in enumerate(codes) if code != 0 or not parts[k].is_file()]
        if failed:
            k = failed[0]
            out = work / f"graph{k}.out"  # graph 0 ran here: its errors are already on the terminal
            tail = out.read_text(errors="replace")[-2000:] if out.is_file() else ""
            print(f"error: graph {k} (ROS domain {domains[k]}) exited {codes[k]}:\n{tail}")
            return codes[k] or 1
        evaluations = [json.loads(p.read_text()) for p in parts]
        results = [r for e in evaluations for r in e["results"]]
        first = evaluations[0]["summary"]
        write_results(args, results, {**{k: first[k] for k in ("checkpoint", "residual", "clock", "seed", "drift")},
                                      "parallel": n, "seeds": [args.seed + k for k in range(n)],
                                      "graph_episodes": counts})
        return 0
    finally:
        _stop(children)
        shutil.rmtree(work, ignore_errors=True)


def _stop(children: list[subprocess.Popen]) -> None:
    """Interrupted or failed: each child stops its own graph (SIGINT), forced only if it hangs."""
    running = [c for c in children if c.poll() is None]
    for c in running:
        c.send_signal(signal.SIGINT)
    for c in running:
        try:
            c.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
