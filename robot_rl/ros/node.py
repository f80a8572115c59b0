"""What every robot_rl node shares: profile + typed params, /diagnostics, worker threads, clean exit.

Nodes spin a SingleThreadedExecutor (the MultiThreadedExecutor collapses above ~60 callbacks/s in
this rclpy) and keep callbacks cheap; heavy work (physics, rendering, inference, disk) goes in
worker threads started with `start_worker`, which `run_node` stops on SIGINT/SIGTERM.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from robot_rl.config import ConfigError, Profile, from_dict, load_profile
from robot_rl.config.nodes import node_params_class
from robot_rl.ros import qos, topics
from robot_rl.ros.env import configure_ros_environment

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class RobotRLNode(Node):
    """Base node: loads the profile named by the `profile` parameter and this node's typed params.

    The node's params come from the profile entry with this node's name (or, failing that, the
    first entry with this executable), and any ROS parameter of the same name overrides them —
    so `robot-rl up`, `ros2 launch` and `ros2 run ... --ros-args -p x:=y` all agree.
    """

    def __init__(self, default_name: str, executable: str, diagnostics_period: float = 1.0):
        super().__init__(default_name)
        self.executable = executable
        profile_ref = self.declare_parameter("profile", "sim").value
        self.profile: Profile = load_profile(profile_ref)
        self.params = self._load_params()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.crashed = False
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos.RELIABLE)
        self._diag_timer = self.create_timer(diagnostics_period, self._publish_diagnostics)

    # -- params ---------------------------------------------------------------------------------
    def _load_params(self):
        cls = node_params_class(self.executable)
        spec = next((n for n in self.profile.nodes if n.name == self.get_name()), None)
        spec = spec or next((n for n in self.profile.nodes if n.executable == self.executable), None)
        values: dict[str, Any] = dict(spec.params) if spec else {}
        defaults = from_dict(cls, values)
        for f in dataclasses.fields(cls):
            current = getattr(defaults, f.name)
            if isinstance(current, (bool, int, float, str)):
                values[f.name] = self.declare_parameter(f.name, current).value
        try:
            return from_dict(cls, values)
        except ConfigError as e:
            raise ConfigError(e.problem, f"{self.get_name()}.params.{e.field}", self.profile.source) from None

    # -- diagnostics ----------------------------------------------------------------------------
    def diagnostics(self) -> tuple[int, str, dict[str, Any]]:
        """Override: (level, message, key/values) for this node's /diagnostics status."""
        return OK, "running", {}

    def _publish_diagnostics(self) -> None:
        level, message, values = self.diagnostics()
        status = DiagnosticStatus(level=level, name=self.get_fully_qualified_name(), message=message,
                                  hardware_id=self.profile.name)
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # -- worker threads -------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start_worker(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Run `target` in a daemon thread; an exception is logged and shuts the node down."""

        def guarded() -> None:
            try:
                target()
            except Exception:  # noqa: BLE001 - report any worker crash, then stop the process
                if self.stopping or not self.context.ok():
                    return  # SIGINT/SIGTERM shut the context down under a publishing worker: a clean exit
                self.get_logger().error(f"worker '{name}' crashed:\n{traceback.format_exc()}")
                self.crashed = True
                self._stop.set()
                self.context.try_shutdown()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._workers.append(thread)
        thread.start()
        return thread

    def wait(self, seconds: float) -> bool:
        """Sleep in a worker; returns False when the node is stopping."""
        return not self._stop.wait(seconds)

    def shutdown(self) -> None:
        """Stop workers (called by run_node before the node is destroyed)."""
        self._stop.set()
        for t in self._workers:
            t.join(timeout=5.0)


def run_node(factory: Callable[[], RobotRLNode], args: list[str] | None = None) -> int:
    """Entry point body: init, spin single-threaded until SIGINT/SIGTERM, stop workers, exit 0.

    A bad profile or parameter exits with status 2 and one clear line (no crash loop, no traceback).
    """
    configure_ros_environment()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the graph runner asks a hung node where it hangs
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = 2
    except Exception:  # noqa: BLE001
        # SIGINT/SIGTERM shut the context down while the executor was waiting or a callback was
        # publishing or taking a message: rclpy raises RCLError (or a RuntimeError from a message
        # conversion cut short) instead of ExternalShutdownException. A clean stop - but the error can
        # come a moment before the context reports it, so give the shutdown a second to show.
        deadline = time.monotonic() + 1.0
        while rclpy.ok() and time.monotonic() < deadline:
            time.sleep(0.02)
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.shutdown()
            code = code or (1 if node.crashed else 0)
        _exit_if_teardown_hangs(TEARDOWN_S, code)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        rclpy.get_default_context().destroy()  # the DDS participant goes here, under the watchdog
    return code


TEARDOWN_S = 4.0  # middleware + GL teardown and exit take < 1.5 s here


def _exit_if_teardown_hangs(seconds: float, code: int) -> None:
    """Armed once the workers have stopped and the node's data is saved: a DDS or GL teardown that
    hangs (once in CI a stopped sim node had to be SIGKILLed) dumps every thread's stack to the log
    and ends the process with the node's own status instead of keeping a stopped node alive."""

    def watchdog() -> None:
        time.sleep(seconds)
        print(f"warning: teardown not done after {seconds:g} s (middleware or GL); exiting anyway. "
              "Threads:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        sys.stdout.flush()
        os._exit(code)

    threading.Thread(target=watchdog, name="teardown-watchdog", daemon=True).start()

