"""The graph runner behind `robot-rl up`: a profile's nodes as real processes, logs prefixed, clean stop.

Same contract as launch/*.launch.py on a system ROS 2 (profile -> node processes), for machines
without the launch CLI. Stops every node with SIGINT (then SIGTERM, then SIGKILL) on Ctrl-C,
SIGTERM, or when any node exits, so nothing is left running.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Callable

from robot_rl.config import NodeSpec, Profile, load_profile
from robot_rl.ros.env import configure_ros_environment

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


@dataclass
class LaunchEntry:
    """One node of a profile, as both the graph runner and launch/*.launch.py start it."""

    executable: str
    name: str
    parameters: dict[str, str]


def launch_entries(profile_ref: str, mode: str = "robot") -> list[LaunchEntry]:
    """The profile's nodes for `mode` with their ROS parameters: the single source for the graph
    runner and the launch files."""
    profile = load_profile(profile_ref)
    return [LaunchEntry(n.executable, n.name, {"profile": profile.source}) for n in profile.nodes_for(mode)]


def node_command(profile: Profile, spec: NodeSpec, overrides: dict[str, str] | None = None) -> list[str]:
    """`python -m robot_rl.nodes.<executable> --ros-args ...` for one node of the profile."""
    args = [sys.executable, "-m", f"robot_rl.nodes.{spec.executable}", "--ros-args",
            "-r", f"__node:={spec.name}", "-p", f"profile:={profile.source}"]
    for key, value in (overrides or {}).items():
        args += ["-p", f"{key}:={value}"]
    return args


@dataclass
class NodeProcess:
    name: str
    process: subprocess.Popen
    reader: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)


class GraphRunner:
    """Start the profile's nodes for `mode` (or `only` those named) as processes; a context manager."""

    def __init__(self, profile: Profile, *, mode: str = "robot", only: list[str] | None = None,
                 env: dict[str, str] | None = None,
                 overrides: dict[str, dict[str, str]] | None = None, out: IO[str] | None = sys.stdout,
                 keep_lines: int = 200, foreground: list[str] | None = None, log_path=None):
        """`log_path`: write the nodes' logs to this file (owned and closed by the runner) instead of `out`."""
        self.profile = profile
        self.specs = [n for n in profile.nodes_for(mode) if only is None or n.name in only]
        unknown = set(only or []) - {n.name for n in profile.nodes}
        if unknown:
            raise ValueError(f"profile {profile.name} has no node(s) {sorted(unknown)}")
        self.env = configure_ros_environment(dict(os.environ if env is None else env))
        self.overrides = overrides or {}
        self._log_file = open(log_path, "w") if log_path else None
        self.out = self._log_file or out
        self.keep_lines = keep_lines
        self.foreground = set(foreground or [])  # nodes that keep this terminal (keyboard teleop)
        self.nodes: list[NodeProcess] = []
        self._print_lock = threading.Lock()
        self.first_exit: tuple[str, int] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "GraphRunner":
        for i, spec in enumerate(self.specs):
            cmd = node_command(self.profile, spec, self.overrides.get(spec.name))
            if spec.name in self.foreground:
                proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, preexec_fn=die_with_parent)
                self.nodes.append(NodeProcess(spec.name, proc))
                continue
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
                                    preexec_fn=die_with_parent)
            node = NodeProcess(spec.name, proc)
            color = COLORS[i % len(COLORS)] if self.out is not None and self.out.isatty() else ""
            node.reader = threading.Thread(target=self._pump, args=(node, color), daemon=True)
            node.reader.start()
            self.nodes.append(node)
        return self

    def _pump(self, node: NodeProcess, color: str) -> None:
        prefix = f"{color}[{node.name}]{RESET if color else ''} "
        assert node.process.stdout is not None
        for line in node.process.stdout:
            node.lines.append(line.rstrip("\n"))
            del node.lines[: -self.keep_lines]
            if self.out is not None:
                with self._print_lock:
                    try:
                        self.out.write(prefix + line)
                        self.out.flush()
                    except ValueError:  # the log file was closed by stop(): nothing left to show
                        pass

    def poll(self) -> list[tuple[str, int]]:
        """Nodes that have exited, with their exit codes."""
        exited = [(n.name, n.process.poll()) for n in self.nodes if n.process.poll() is not None]
        if exited and self.first_exit is None:
            self.first_exit = exited[0]
        return exited  # type: ignore[return-value]

    def wait(self, duration: float | None = None, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Block until a node exits, `duration` passes or `should_stop()`; then stop all. Exit code."""
        deadline = None if duration is None else time.monotonic() + duration
        while not should_stop() and not self.poll() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
        return self.stop()

    def stop(self, timeout: float = 8.0) -> int:
        """SIGINT every node, escalate to SIGTERM/SIGKILL; 0 if all ended cleanly and none died early."""
        died_early = self.first_exit is not None and self.first_exit[1] != 0
        needed: dict[str, str] = {}  # node -> the signal that finally ended it
        hung: set[str] = set()  # nodes asked for their thread stacks before SIGKILL
        for sig, grace in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [n for n in self.nodes if n.process.poll() is None]
            if not alive:
                break
            if sig == signal.SIGKILL:  # a hung node's stacks (run_node registers SIGUSR1) say where it hangs
                hung = {n.name for n in alive if n.reader is not None}
                for n in alive:
                    try:
                        os.kill(n.process.pid, signal.SIGUSR1)
                    except ProcessLookupError:
                        pass
                time.sleep(1.0)
            for n in alive:
                needed[n.name] = sig.name
                try:
                    os.killpg(n.process.pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + grace
            while time.monotonic() < end and any(n.process.poll() is None for n in alive):
                time.sleep(0.05)
        for n in self.nodes:
            if n.reader is not None:
                n.reader.join(timeout=2.0)
        codes = [n.process.wait() for n in self.nodes]
        if self._log_file is not None:
            self._log_file.close()
        unclean = [(n.name, c) for n, c in zip(self.nodes, codes) if c not in (0, -signal.SIGINT)]
        for name, code in unclean:  # say which node, or a failed run's only clue is its exit code
            how = f"after {needed[name]}" if name in needed else "before the graph was stopped"
            print(f"warning: node '{name}' ended with status {code} {how}", file=sys.stderr, flush=True)
            if name in hung:
                stacks = "\n".join(self.log(name).splitlines()[-80:])
                print(f"its log's end, with its threads' stacks when it would not stop:\n{stacks}",
                      file=sys.stderr, flush=True)
        return 1 if died_early or unclean else 0

    def __enter__(self) -> "GraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, name: str) -> str:
        return "\n".join(next(n.lines for n in self.nodes if n.name == name))


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the runner dies (even by SIGKILL), so no node is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the runner's own stop() still cleans up


def run_until_interrupted(runner: GraphRunner, duration: float | None = None) -> int:
    """`robot-rl up`: run the graph until Ctrl-C / SIGTERM / a node exits, then stop everything."""
    stop = threading.Event()

    def request_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        code = runner.wait(duration, stop.is_set)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if runner.first_exit and runner.first_exit[1] != 0:
        name, rc = runner.first_exit
        print(f"robot-rl up: node '{name}' exited with status {rc}; stopped the graph", file=sys.stderr)
    return code
