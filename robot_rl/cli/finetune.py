"""`robot-rl finetune`: a residual RL fine-tuning session through the ROS graph.

Starts the profile's `finetune` nodes (sim robot in lockstep by default, policy node with the
residual and exploration, rollout recorder extending the store, episode manager, learner), follows
/episode/events and the learner's diagnostics with a live status, and stops at the budget
(episodes, environment steps or minutes). Everything it saw goes to RUN_DIR/session.jsonl.
"""
from __future__ import annotations

import argparse
import json
import queue
import time
from pathlib import Path

from robot_rl.config import ConfigError, load_profile


SAMPLE_KEYS = ("inference_ms", "tick_ms")  # policy diagnostics that carry each latency sample once


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="residual RL fine-tuning session (policy + recorder + episode manager + learner)")
    p.add_argument("--base", type=Path, required=True, help="base policy checkpoint directory")
    p.add_argument("--store", type=Path, required=True, help="store with demonstrations; rollouts are appended")
    p.add_argument("--profile", default="sim")
    p.add_argument("--preset", default="cpu_small", help="residual RL preset: recipe | cpu_small | cpu_lowdim | cpu_adapt | cpu_offset | tiny")
    p.add_argument("--rl-config", type=Path, default=None,
                   help="YAML of residual RL settings (`preset:` + field overrides); its preset replaces --preset")
    p.add_argument("--run-dir", type=Path, default=None, help="learner checkpoints and the session log")
    p.add_argument("--episodes", type=int, default=0, help="stop after this many episodes (0: no limit)")
    p.add_argument("--env-steps", type=int, default=0, help="stop after this many environment steps (0: no limit)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: no limit)")
    p.add_argument("--max-steps", type=int, default=150, help="control steps per episode")
    p.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep")
    p.add_argument("--log", type=Path, default=None, help="node logs go here instead of RUN_DIR/graph.log")
    p.add_argument("--reward", type=Path, default=None,
                   help="label episodes with this reward classifier (robot-rl train-reward) instead of the sim")
    p.add_argument("--no-report", action="store_true", help="skip the HTML session report at the end")
    add_drift_option(p)
    p.set_defaults(func=run_finetune)


def add_drift_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drift", default="", metavar="JOINT=RAD[,...]",
                   help="sim only: these joints settle this far from their targets, as if the robot had changed "
                        "since the demonstrations (e.g. waist=0.05); default: none")


def drift_param(profile, text: str) -> str:
    """The sim robot node's `drift` parameter, checked against the profile before anything starts."""
    if not text or text.strip() == "none":
        return ""
    if profile.sim is None or profile.robot.driver == "gymnasium":
        raise ConfigError(f"--drift {text}: only the MuJoCo sim robot can drift; profile {profile.name} has none",
                          "sim", profile.source)
    from robot_rl.sim.robot import parse_drift

    try:
        drift = parse_drift(text, list(profile.robot.joint_names))
    except ValueError as e:
        raise ConfigError(f"--drift: {e}") from None
    return ",".join(f"{j}={v:g}" for j, v in drift.items())


def node_named(profile, executable: str, mode: str = "finetune"):
    spec = next((n for n in profile.nodes_for(mode) if n.executable == executable), None)
    if spec is None:
        raise ConfigError(f"profile {profile.name} has no {executable} in mode '{mode}'", "nodes", profile.source)
    return spec.name


def has_operator(profile) -> bool:
    """A teleop node in the session: a human (or the sim's expert playing one) may intervene."""
    return any(n.executable == "teleop_node" for n in profile.nodes_for("finetune"))


def run_finetune(args: argparse.Namespace) -> int:
    from std_msgs.msg import String
    from tqdm import tqdm

    from robot_rl.ros import qos, topics
    from robot_rl.ros.graph import GraphRunner
    from robot_rl.ros.sim_client import RobotClient

    profile = load_profile(args.profile)
    if not (args.base / "config.json").is_file():
        raise ConfigError(f"{args.base} is not a base checkpoint directory (no config.json)")
    if not args.store.exists():
        raise ConfigError(f"store {args.store} does not exist; collect demonstrations first (robot-rl collect)")
    if not (args.episodes or args.env_steps or args.minutes):
        raise ConfigError("give a budget: --episodes, --env-steps or --minutes")
    preflight(profile, args.base, args.store, args.reward)
    drift = drift_param(profile, args.drift)
    if args.rl_config is not None:  # learner and policy node both read the file
        from robot_rl.config.typed import load_yaml
        from robot_rl.rl.config import load_config

        load_config(args.rl_config)  # errors name the file and field, before anything starts
        args.preset = (load_yaml(args.rl_config) or {}).get("preset", "recipe")
    run_dir = args.run_dir or Path("runs") / time.strftime("finetune-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    base, store = str(args.base.resolve()), str(args.store.resolve())
    overrides = {
        node_named(profile, "policy_node"): {"checkpoint": base, "residual": "true", "rl_preset": args.preset,
                                             **({"rl_config": str(args.rl_config.resolve())} if args.rl_config else {}),
                                             "tick": "observation" if args.clock == "lockstep" else "timer"},
        node_named(profile, "recorder_node"): {"store": store, "mode": "rollout", "base_checkpoint": base},
        node_named(profile, "episode_manager_node"): {
            "episodes": str(args.episodes), "max_steps": str(args.max_steps),
            "await_listeners": str(1 + has_operator(profile)),  # this command's client (+ the teleop node)
            **({"await_operator": "true"} if has_operator(profile) else {}),
            **({"label": "classifier", "reward_checkpoint": str(args.reward.resolve())} if args.reward else {})},
        node_named(profile, "learner_node"): {"store": store, "base_checkpoint": base, "preset": args.preset,
                                              "run_dir": str((run_dir / "learner_run").resolve()),
                                              **({"config": str(args.rl_config.resolve())} if args.rl_config else {})},
    }
    if profile.sim is not None:
        overrides[node_named(profile, "sim_robot_node")] = {"clock": args.clock, "episode_steps": str(args.max_steps),
                                                            **({"drift": drift} if drift else {})}
    log_path = args.log or run_dir / "graph.log"
    write_run_info(run_dir, store=store, base_checkpoint=base, profile=profile.name, preset=args.preset,
                   drift=drift or "none")
    names = {role: node_named(profile, exe) for role, exe in
             (("learner", "learner_node"), ("policy", "policy_node"))}
    if profile.sim is not None:
        names["robot"] = node_named(profile, "sim_robot_node")
    session = open(run_dir / "session.jsonl", "a")
    print(f"== finetune {profile.name}: base {args.base}, store {args.store}, preset {args.preset}, run dir {run_dir}"
          + (f", robot drift {drift}" if drift else ""))
    runner = GraphRunner(profile, mode="finetune", overrides=overrides, log_path=log_path).start()
    client = RobotClient.open(profile, "finetune_client")
    events: queue.Queue = queue.Queue()
    client.probe.node.create_subscription(String, topics.EPISODE_EVENTS, lambda m: events.put(json.loads(m.data)),
                                          qos.RELIABLE)
    start = time.monotonic()
    episodes, steps, successes, window = 0, 0, 0, []
    seen: dict[str, int | None] = {}
    code = 0
    try:
        bar = tqdm(total=args.episodes or None, unit="episode", dynamic_ncols=True)
        while True:
            if runner.poll():
                name, rc = runner.first_exit
                print(f"error: node '{name}' exited with status {rc} (see {log_path})")
                code = 1
                break
            if (args.env_steps and steps >= args.env_steps) or (args.minutes and time.monotonic() - start > 60 * args.minutes):
                break
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                continue
            event["wall_s"] = round(time.monotonic() - start, 2)
            if event.get("event") == "episode_done":
                episodes, steps = episodes + 1, steps + event["steps"]
                successes += int(event["success"])
                window = (window + [event["success"]])[-20:]
                for role, name in names.items():  # what the report plots per episode (newest, <= 1 s old)
                    event[role] = client.latest_diagnostics(name)
                    if seen.get(name) == client.diagnostics_count.get(name):  # attached to an earlier episode
                        for key in SAMPLE_KEYS:
                            event[role].pop(key, None)
                    seen[name] = client.diagnostics_count.get(name)
                learner = event["learner"]
                bar.update(1)
                bar.set_postfix(env_steps=steps, success_last20=f"{sum(window)}/{len(window)}",
                                weights=learner.get("weight_version", "-"), utd=learner.get("realized_utd", "-"))
            session.write(json.dumps(event) + "\n")
            session.flush()
            if event.get("event") == "session_done":
                break
        bar.close()
    finally:
        client.close()
        code = runner.stop() or code
        session.close()
    rate = successes / episodes if episodes else 0.0
    print(f"== finetune: {episodes} episodes, {steps} environment steps, success {100 * rate:.1f} % "
          f"({time.monotonic() - start:.0f} s); session log {run_dir / 'session.jsonl'}")
    write_run_info(run_dir, stages={"finetune": round(time.monotonic() - start, 1)})
    if episodes and not args.no_report:
        from robot_rl.report import write_report

        print(f"== report: {write_report(run_dir, Path(store))}")
    return code


def preflight(profile, base: Path, store: Path, reward: Path | None = None) -> None:
    """What would make the nodes fail at start, checked before any process is launched."""
    from robot_rl.data.store import Store
    from robot_rl.policies.checkpoint import load_checkpoint
    from robot_rl.policies.spec import SpecError, check_profile

    try:
        check_profile(load_checkpoint(base).spec, profile)
    except (SpecError, FileNotFoundError, ValueError, KeyError) as e:
        raise ConfigError(f"base checkpoint {base} does not fit profile {profile.name}: {e}") from None
    try:
        opened = Store.open(store)
        meta = opened.episodes_meta()
        opened.close()
    except Exception as e:  # noqa: BLE001 - any open failure is a start-up error for the user
        raise ConfigError(f"cannot open the store {store}: {e}") from None
    if not any(m["source"] == "demo" and m["success"] for m in meta):
        sources = sorted({m["source"] for m in meta})
        raise ConfigError(f"store {store} has no successful demonstrations ({len(meta)} episodes, sources "
                          f"{sources or 'none'}); collect some first: robot-rl collect --store {store}")
    if reward is not None:
        from robot_rl.reward.checkpoint import RewardClassifierError, read_config
        from robot_rl.reward.checkpoint import check_profile as check_classifier

        try:
            check_classifier(read_config(reward), profile, reward)
        except (RewardClassifierError, FileNotFoundError, ValueError) as e:
            raise ConfigError(str(e)) from None


def write_run_info(run_dir: Path, stages: dict | None = None, **info) -> None:
    """Merge into RUN_DIR/run.json what the report needs beyond the session log (store, base, stage times)."""
    path = run_dir / "run.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(info)
    data["stages"] = {**data.get("stages", {}), **(stages or {})}
    path.write_text(json.dumps(data, indent=2))
