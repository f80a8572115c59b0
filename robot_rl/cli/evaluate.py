"""`robot-rl eval`: run a base checkpoint on the sim profile for N episodes through the ROS graph
(sim robot in lockstep + policy node) and report the success rate with a Wilson 95 % interval."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from robot_rl.cli.finetune import add_drift_option, drift_param
from robot_rl.config import ConfigError, load_profile
from robot_rl.stats import wilson


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="success rate of a checkpoint on the sim, through the ROS graph")
    p.add_argument("--checkpoint", type=Path, required=True, help="base policy checkpoint directory")
    p.add_argument("--profile", default="sim")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=150, help="control steps per episode")
    p.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep")
    p.add_argument("--seed", type=int, default=1000, help="sim layout seed (same seed = same layouts)")
    p.add_argument("--residual", type=Path, default=None,
                   help="add a fine-tuned residual: a learner checkpoint (RUN_DIR/learner_run of robot-rl finetune)")
    p.add_argument("--out", type=Path, help="write the per-episode results and summary as JSON here")
    p.add_argument("--log", type=Path, help="node logs go here instead of the terminal")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="run N sim + policy graphs side by side, each in its own ROS domain (ROS_DOMAIN_ID + k) "
                        "on its own layouts (seed + k); ~1.6x the episodes per minute on 2 cores. Two evals "
                        "compare episode by episode only with the same --seed and --parallel")
    add_drift_option(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from std_srvs.srv import SetBool
    from tqdm import tqdm

    from robot_rl.ros import topics
    from robot_rl.ros.graph import GraphRunner
    from robot_rl.ros.sim_client import RobotClient

    profile = load_profile(args.profile)
    if profile.sim is None:
        raise ConfigError(f"eval needs a simulated robot; profile {profile.name} has none", "sim", profile.source)
    if args.parallel < 1 or args.parallel > max(1, args.episodes):
        raise ConfigError(f"--parallel {args.parallel}: must be between 1 and --episodes ({args.episodes})")
    if args.parallel > 1:
        from robot_rl.cli.eval_parallel import run_parallel

        return run_parallel(args)
    nodes = profile.nodes_for("deploy")
    policy = next((n for n in nodes if n.executable == "policy_node"), None)
    sim = next((n for n in nodes if n.executable == "sim_robot_node"), None)
    if policy is None or sim is None:
        raise ConfigError("eval needs a sim_robot_node and a policy_node in mode 'deploy'", "nodes", profile.source)
    if not (args.checkpoint / "config.json").is_file():
        raise ConfigError(f"{args.checkpoint} is not a checkpoint directory (no config.json)")
    lockstep = args.clock == "lockstep"
    drift = drift_param(profile, args.drift)
    overrides = {sim.name: {"clock": args.clock, "seed": str(args.seed), "episode_steps": str(args.max_steps),
                            **({"drift": drift} if drift else {})},
                 policy.name: {"checkpoint": str(args.checkpoint.resolve()), "tick": "observation" if lockstep else "timer"}}
    if args.residual is not None:  # base + the fine-tuned residual (its learner's own config), no exploration
        rl_config = residual_config(args.residual)
        overrides[policy.name].update(residual="true", residual_weights=str(args.residual.resolve()), explore="false",
                                      rl_config=str(rl_config))
    runner = GraphRunner(profile, mode="deploy", overrides=overrides, log_path=args.log).start()
    client = RobotClient.open(profile, "eval_client")
    enable = client.probe.node.create_client(SetBool, topics.POLICY_ENABLE)
    results = []
    try:
        if lockstep:  # no motion, no data: wait for the services and the command subscription instead
            problem = "" if client.reset_client.wait_for_service(timeout_sec=120) else "sim robot not up"
            problem = problem or ("" if client.probe.wait_matched(client.command_pub, timeout=60) else "no /robot/command")
            # the policy acts on the reset's task state: a reset it did not hear costs a 1 s re-send
            if not problem and not client.probe.wait_subscribed(topics.SIM_TASK_STATE, policy.name, timeout=60):
                problem = f"the policy node {policy.name} never subscribed to {topics.SIM_TASK_STATE} (see the log)"
        else:
            problem = client.wait_ready(timeout=120)
        if not problem and not enable.wait_for_service(timeout_sec=120):
            problem = f"{topics.POLICY_ENABLE} not available (did the policy node start? see the log)"
        if problem:
            print(f"error: {problem}")
            return 1
        what = f"{args.checkpoint} + residual {args.residual}" if args.residual else str(args.checkpoint)
        print(f"== eval {what} on {profile.name}: {args.episodes} episodes, {args.clock} clock"
              + (f", robot drift {drift}" if drift else ""))
        bar = tqdm(range(args.episodes), unit="episode", dynamic_ncols=True)
        for _ in bar:
            results.append(run_episode(client, enable, args.max_steps, profile.robot.control_rate_hz, lockstep))
            wins = sum(r["success"] for r in results)
            bar.set_postfix(success=f"{wins}/{len(results)}")
            if runner.poll():
                print(f"error: node {runner.first_exit[0]} exited ({runner.first_exit[1]})")
                return 1
    finally:
        client.close()
        code = runner.stop()
        if args.residual is not None:
            rl_config.unlink(missing_ok=True)
    write_results(args, results, {"checkpoint": str(args.checkpoint), "residual": str(args.residual or ""),
                                  "clock": args.clock, "seed": args.seed, "drift": drift or "none"})
    return code


def write_results(args: argparse.Namespace, results: list[dict], fields: dict) -> dict:
    """Success rate with its Wilson interval: printed, and written with the per-episode results to --out."""
    wins = sum(r["success"] for r in results)
    lo, hi = wilson(wins, len(results))
    summary = {**fields, "episodes": len(results), "successes": wins, "success_rate": wins / max(1, len(results)),
               "ci95": [round(lo, 4), round(hi, 4)],
               "mean_steps": sum(r["steps"] for r in results) / max(1, len(results)),
               "stalled": sum(bool(r.get("timed_out")) for r in results)}
    print(f"== success {wins}/{len(results)} = {100 * summary['success_rate']:.1f} % "
          f"(95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)")
    if summary["stalled"]:  # a graph fault, not the policy's: say so rather than hide it in the rate
        print(f"warning: {summary['stalled']} episode(s) stalled before --max-steps (the sim stopped "
              f"stepping) and count as failures; the policy and sim_robot logs (--log) say why")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "results": results}, indent=2))
    return summary


def residual_config(learner: Path) -> Path:
    """The residual RL config a learner checkpoint was trained with, as a file the policy node reads."""
    import tempfile

    from robot_rl.rl.checkpoint import resolve_learner_checkpoint

    try:
        state = json.loads((resolve_learner_checkpoint(learner) / "state.json").read_text())
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--residual {learner}: {e}") from None
    import yaml

    fd, path = tempfile.mkstemp(prefix="residual_config_", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(state["config"], f)  # not JSON: YAML 1.1 reads JSON's 1e-06 as a string
    return Path(path)


STALL_S = 30.0  # lockstep: no control step for this long ends the episode as stalled


def run_episode(client, enable, max_steps: int, rate_hz: float, lockstep: bool) -> dict:
    """Reset, enable the policy, count control steps (sim task states) until success or max_steps."""
    from std_srvs.srv import SetBool

    state = client.reset(clear_streams=False)
    episode = state.get("episode")
    client.call(enable, SetBool.Request(data=True))
    first, seen, steps, success = None, None, 0, False
    deadline = time.monotonic() + max_steps / rate_hz * (20 if lockstep else 1.5) + 30
    progress = time.monotonic()
    while steps < max_steps and time.monotonic() < deadline:
        current = client.task_state(episode)
        if current is not None and current.get("stamp") != seen:
            seen, progress = current.get("stamp"), time.monotonic()
            first = seen if first is None else first
            # steps from robot time, not from messages seen: polling the newest state can miss one, and
            # an undercount waits out STALL_S at the sim's episode budget and reports a false stall
            steps = int(round((seen - first) * rate_hz)) + 1
            if current.get("success"):
                success = True
                break
        elif lockstep and time.monotonic() - progress > STALL_S:
            break  # the sim steps only on commands: nothing for this long is a stall, not a slow host
        else:
            time.sleep(0.002)
    client.call(enable, SetBool.Request(data=False))
    return {"success": success, "steps": steps, "timed_out": steps < max_steps and not success}
