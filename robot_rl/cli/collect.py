"""`robot-rl collect`: bring up a profile's collection graph (robot, sensors, teleop, recorder) and
collect N episodes into a store. On a sim profile with the scripted expert it runs unattended:
reset -> start recording -> expert acts -> success or timeout -> label -> commit, by default on a
lockstep sim (the expert acts once per sim step, as fast as the CPU allows; `--clock realtime` keeps the
wall-clock control rate). On a real setup the operator drives episodes from the teleop device and this
command shows status until N commits.
"""
from __future__ import annotations

import argparse
import json
import queue
import time
from pathlib import Path

from robot_rl.config import load_profile

STATUS_PERIOD = 0.5
MAX_LOST_IN_A_ROW = 3
RESET_AGAIN_S = 2.0  # lockstep: a recorder still waiting for the first observation this long gets a new one
STALL_S = 5.0


class EpisodeLost(RuntimeError):
    """The recorder committed nothing for an episode (the store is unchanged)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="collect teleoperated episodes into a store")
    p.add_argument("--profile", default="sim")
    p.add_argument("--store", type=Path, default=None, help="store path (default: the profile's recorder param)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=15.0, help="sim: episode timeout (robot time)")
    p.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep",
                   help="sim with the scripted expert: one expert tick per sim step as fast as the CPU allows "
                        "(lockstep), or the wall-clock control rate")
    p.add_argument("--expert-noise", type=float, default=None, help="sim: scripted expert noise (default: profile)")
    p.add_argument("--expert-corrections", type=float, default=None,
                   help="sim: share of episodes the expert sets down off target, then corrects (default: profile)")
    p.add_argument("--seed", type=int, default=None, help="sim: seed for layouts and expert")
    p.add_argument("--log", type=Path, default=None, help="write node logs here instead of the terminal")
    p.set_defaults(func=run_collect)


def store_path_of(profile, override: Path | None) -> Path:
    if override is not None:
        return override
    spec = next(n for n in profile.nodes_for("collect") if n.executable == "recorder_node")
    return Path(profile.node_params(spec.name).store.replace("{profile}", profile.name))


def run_collect(args: argparse.Namespace) -> int:
    from std_msgs.msg import String
    from tqdm import tqdm

    from robot_rl.ros import qos, topics
    from robot_rl.ros.graph import GraphRunner
    from robot_rl.ros.sim_client import RobotClient

    profile = load_profile(args.profile)
    recorder = next((n for n in profile.nodes_for("collect") if n.executable == "recorder_node"), None)
    teleop = next((n for n in profile.nodes_for("collect") if n.executable == "teleop_node"), None)
    if recorder is None:
        raise SystemExit(f"robot-rl collect: profile {profile.name} has no recorder_node in mode 'collect'")
    store = store_path_of(profile, args.store)
    overrides = {recorder.name: {"store": str(store.resolve())}}
    if teleop is not None:
        t = overrides.setdefault(teleop.name, {})
        if args.expert_noise is not None:
            t["expert_noise"] = str(args.expert_noise)
        if args.expert_corrections is not None:
            t["expert_corrections"] = str(args.expert_corrections)
        if args.seed is not None:
            t["seed"] = str(args.seed)
    sim_node = next((n for n in profile.nodes_for("collect") if n.executable == "sim_robot_node"), None)
    if sim_node is not None and args.seed is not None:
        overrides.setdefault(sim_node.name, {})["seed"] = str(args.seed)
    unattended = profile.sim is not None and teleop is not None and teleop.params.get("device") == "expert"
    lockstep = unattended and sim_node is not None and args.clock == "lockstep"
    if lockstep:  # the expert acts on each sim step and stamps its command with it; the recorder ticks on those
        overrides.setdefault(sim_node.name, {})["clock"] = "lockstep"
        overrides.setdefault(teleop.name, {})["tick"] = "observation"
        overrides[recorder.name]["tick"] = "command"
    keyboard = teleop is not None and teleop.params.get("device", "keyboard") == "keyboard"
    runner = GraphRunner(profile, mode="collect", overrides=overrides, log_path=args.log,
                         foreground=[teleop.name] if keyboard else None)
    print(f"== collect: {args.episodes} episodes of profile {profile.name} into {store}"
          + (f" (scripted expert, unattended, {'lockstep' if lockstep else 'realtime'} clock)" if unattended
             else " (drive episodes from the teleop device)"))
    runner.start()
    client = RobotClient.open(profile, "collect_client")
    events: queue.Queue = queue.Queue()
    client.probe.node.create_subscription(String, topics.EPISODE_EVENTS, lambda m: events.put(json.loads(m.data)),
                                          qos.RELIABLE)
    results = []
    try:
        problem = wait_lockstep_graph(client, timeout=90) if lockstep else client.wait_ready(timeout=90)
        if problem:
            print(f"error: the graph did not come up: {problem}")
            return 1
        session = RecorderSession(client, lockstep)
        bar = tqdm(total=args.episodes, unit="episode", dynamic_ncols=True)
        lost_in_a_row = 0
        while len(results) < args.episodes:
            if runner.poll():
                name, code = runner.first_exit
                print(f"error: node '{name}' exited with status {code}")
                return 1
            if unattended:
                try:
                    result = session.sim_episode(args.max_seconds)
                except EpisodeLost as e:
                    # Nothing reached the store. An unattended expert episode is simply run again; a
                    # run that keeps losing episodes has a real problem and stops.
                    lost_in_a_row += 1
                    tqdm.write(f"warning: {e}; running the episode again ({lost_in_a_row}/{MAX_LOST_IN_A_ROW})")
                    if lost_in_a_row >= MAX_LOST_IN_A_ROW:
                        print(f"error: {MAX_LOST_IN_A_ROW} episodes in a row were lost; see the recorder's log")
                        return 1
                    continue
                lost_in_a_row = 0
            else:
                result = session.wait_commit(events)
            if result is None:
                continue
            results.append(result)
            wins = sum(r["success"] for r in results)
            flagged = sum(not r["health"]["ok"] for r in results)
            bar.update(1)
            bar.set_postfix(success=f"{wins}/{len(results)}", steps=result["steps"], flagged=flagged)
        bar.close()
    finally:
        client.close()
        code = runner.stop()
    wins = sum(r["success"] for r in results)
    flagged = [r["index"] for r in results if not r["health"]["ok"]]
    print(f"== collected {len(results)} episodes into {store}: {wins} successes"
          + (f"; below the health bar: episodes {flagged}" if flagged else "; all passed the health bar"))
    return code


def wait_lockstep_graph(client, timeout: float) -> str:
    """A lockstep sim moves only when commanded and the expert acts only in an episode, so nothing
    flows yet: wait for the reset service and for the expert's subscriptions and command publisher.
    (Should the expert still miss an episode's first observation, that episode is lost and run again.)"""
    from robot_rl.ros import topics

    if not client.reset_client.wait_for_service(timeout_sec=timeout):
        return f"service {topics.ROBOT_RESET} not available"
    node = client.probe.node
    ready = lambda: (node.count_subscribers(topics.SIM_TASK_STATE) >= 2  # noqa: E731 - the expert's and ours
                     and node.count_subscribers(topics.EPISODE_EVENTS) >= 2  # it starts on the recorder's event
                     and node.count_publishers(topics.ROBOT_COMMAND) >= 1)
    if not client.probe.wait_for(ready, timeout):
        return f"the expert teleop node is not up within {timeout:.0f} s (see its log)"
    time.sleep(1.0)  # we see its endpoints; give the sim and the recorder a moment to match them too
    return ""


class RecorderSession:
    """Drives the recorder's services for one episode at a time."""

    def __init__(self, client, lockstep: bool = False):
        from std_srvs.srv import SetBool, Trigger

        from robot_rl.ros import topics

        node = client.probe.node
        self.client = client
        self.lockstep = lockstep
        self.Trigger, self.SetBool = Trigger, SetBool
        self.start = node.create_client(Trigger, topics.RECORDER_START)
        self.stop = node.create_client(Trigger, topics.RECORDER_STOP)
        self.label = node.create_client(SetBool, topics.RECORDER_LABEL_SUCCESS)
        for c in (self.start, self.stop, self.label):
            if not c.wait_for_service(timeout_sec=30):
                raise RuntimeError(f"recorder service {c.srv_name} not available")

    def reset_and_begin(self, timeout: float = 30.0):
        """Reset the robot and start recording; returns the new episode's id. The recorder refuses
        until every stream, the teleop commands included, is fresh (on a busy machine its
        subscriptions can match seconds after the graph is up). A lockstep sim publishes an episode's
        first observation once, at its reset, so a recorder that matched after that would wait for it
        forever: the sim is reset again every RESET_AGAIN_S until the recorder starts."""
        deadline = time.monotonic() + timeout
        episode, reset_at = self.client.reset(clear_streams=False).get("episode"), time.monotonic()
        while True:
            response = self.client.call(self.start, self.Trigger.Request())
            if response.success:
                return episode
            if time.monotonic() > deadline:
                raise EpisodeLost(f"the recorder refused to start for {timeout:.0f} s: {response.message}")
            if self.lockstep and time.monotonic() - reset_at > RESET_AGAIN_S:
                episode, reset_at = self.client.reset(clear_streams=False).get("episode"), time.monotonic()
            time.sleep(0.1)

    def sim_episode(self, max_seconds: float) -> dict:
        """One expert episode; `max_seconds` of robot time (the task state's stamps: a lockstep sim's
        run ahead of the wall clock). Ends early when robot time stops moving for STALL_S of wall time."""
        if self.lockstep:
            self.wait_still()
        episode = self.reset_and_begin()
        first_stamp = last_stamp = None
        moved = time.monotonic()
        success = False
        while time.monotonic() - moved < STALL_S:  # robot time stopped: the sim or the expert is stuck
            current = self.client.task_state(episode)
            if current:
                first_stamp = current["stamp"] if first_stamp is None else first_stamp
                if current["stamp"] != last_stamp:
                    last_stamp, moved = current["stamp"], time.monotonic()
                if current.get("success"):
                    success = True
                    break
                if current["stamp"] - first_stamp >= max_seconds:
                    break
            time.sleep(0.01)
        self.client.call(self.label, self.SetBool.Request(data=success))
        response = self.client.call(self.stop, self.Trigger.Request(), timeout=60)
        if not response.success:
            if response.message.startswith("episode lost"):
                raise EpisodeLost(f"recorder: {response.message}")
            raise RuntimeError(f"recorder could not commit: {response.message}")
        info = json.loads(response.message)
        return {"index": info["index"], "success": success, "health": info["health"],
                "steps": info["health"]["ticks"] - info["health"]["invalid_ticks"]}

    def wait_still(self, quiet_s: float = 0.2, timeout: float = 5.0) -> None:
        """Lockstep: let the expert's last commands of the previous episode land before resetting, so
        none of them steps the new episode (each step would then have two commands in flight)."""
        from robot_rl.ros import topics

        deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            latest = self.client.probe.latest(topics.SIM_TASK_STATE)
            stamp = latest.stamp if latest else None
            if stamp != last:
                last, since = stamp, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.02)

    def wait_commit(self, events: queue.Queue) -> dict | None:
        try:
            event = events.get(timeout=STATUS_PERIOD)
        except queue.Empty:
            return None
        if event.get("event") != "commit":
            return None
        return {"index": event["index"], "success": event["success"], "health": event["health"],
                "steps": event["health"]["ticks"] - event["health"]["invalid_ticks"]}
