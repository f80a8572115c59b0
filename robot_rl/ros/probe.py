"""An independent rclpy node that watches a profile's streams: for tests, `make demo` and benchmarks.

It spins its own executor in a background thread so the caller can block on conditions
(`wait_for`, `wait_matched`) instead of sleeping.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rclpy
from rclpy.signals import SignalHandlerOptions
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from robot_rl.config import Profile
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.env import configure_ros_environment


@dataclass
class Arrival:
    received: float  # wall clock at the callback
    stamp: float  # header stamp (capture time)
    msg: Any


class TopicProbe:
    """Subscribe to topics and keep the recent arrivals of each."""

    def __init__(self, name: str = "robot_rl_probe", keep: int = 20000, context=None):
        configure_ros_environment()
        if context is None and not rclpy.ok():
            # Ctrl-C must reach the CLI as KeyboardInterrupt (its finally stops the graph); rclpy's own
            # handler would only shut the context down and leave the command waiting for messages.
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node: Node = rclpy.create_node(name, context=context)
        self.arrivals: dict[str, deque[Arrival]] = defaultdict(lambda: deque(maxlen=keep))
        self.counts: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down under us while closing
                break

    def watch(self, topic: str, msg_type: type, qos_profile=qos.SENSOR, keep_msg: bool = True) -> None:
        def callback(msg, topic=topic):
            stamp = convert.from_time(msg.header.stamp) if hasattr(msg, "header") else time.time()
            with self._cond:
                self.arrivals[topic].append(Arrival(time.time(), stamp, msg if keep_msg else None))
                self.counts[topic] += 1
                self._cond.notify_all()

        self.node.create_subscription(msg_type, topic, callback, qos_profile)

    def watch_profile(self, profile: Profile) -> list[str]:
        """Every sensor stream of a profile (joint states, cameras, tactile) plus the sim task state."""
        watched = [topics.JOINT_STATES]
        self.watch(topics.JOINT_STATES, JointState, qos.sensor_subscription(profile.robot.state_rate_hz))
        for cam in profile.cameras:
            self.watch(topics.camera_color(cam.name), Image, qos.sensor_subscription(cam.fps))
            self.watch(topics.camera_info(cam.name), CameraInfo, qos.LATCHED)
            watched += [topics.camera_color(cam.name), topics.camera_info(cam.name)]
            if cam.depth:
                self.watch(topics.camera_depth(cam.name), Image, qos.sensor_subscription(cam.fps))
                watched.append(topics.camera_depth(cam.name))
        for tac in profile.tactile:
            self.watch(topics.tactile_image(tac.name), Image, qos.sensor_subscription(tac.rate_hz))
            watched.append(topics.tactile_image(tac.name))
        if profile.state_names:
            self.watch(topics.ROBOT_STATE, JointState, qos.sensor_subscription(profile.robot.state_rate_hz))
            watched.append(topics.ROBOT_STATE)
        if profile.sim is not None:
            self.watch(topics.SIM_TASK_STATE, String, qos.RELIABLE)
        return watched

    # -- waiting on conditions ------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def wait_count(self, topic: str, n: int, timeout: float) -> bool:
        return self.wait_for(lambda: self.counts[topic] >= n, timeout)

    def wait_matched(self, publisher, n: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def wait_subscribed(self, topic: str, node_name: str, timeout: float = 10.0) -> bool:
        """Until this probe's view of the graph has `node_name` subscribed to `topic` (another node's
        subscription, which `wait_matched` cannot see)."""
        deadline = time.monotonic() + timeout
        while not any(i.node_name == node_name.lstrip("/").rsplit("/", 1)[-1]
                      for i in self.node.get_subscriptions_info_by_topic(topic)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def latest(self, topic: str) -> Arrival | None:
        with self._cond:
            return self.arrivals[topic][-1] if self.arrivals[topic] else None

    def drop_before(self, topic: str, stamp: float) -> None:
        """Forget arrivals of `topic` captured before `stamp` (e.g. everything before a reset)."""
        with self._cond:
            kept = [a for a in self.arrivals[topic] if a.stamp >= stamp]
            self.arrivals[topic].clear()
            self.arrivals[topic].extend(kept)
            self.counts[topic] = len(kept)

    def clear(self, topic: str | None = None) -> None:
        with self._cond:
            for t in [topic] if topic else list(self.arrivals):
                self.arrivals[t].clear()
                self.counts[t] = 0

    # -- statistics -----------------------------------------------------------------------------
    def stats(self, topic: str) -> dict[str, float]:
        """Count, rate and median period from capture stamps, and stamp->receive latency percentiles (ms)."""
        with self._cond:
            items = list(self.arrivals[topic])
        if len(items) < 2:
            return {"count": len(items), "rate_hz": 0.0, "period_median_s": float("nan"), "latency_p50_ms": float("nan"),
                    "latency_p99_ms": float("nan")}
        stamps = np.array([a.stamp for a in items])
        latency = (np.array([a.received for a in items]) - stamps) * 1e3
        span = stamps[-1] - stamps[0]
        return {"count": len(items), "rate_hz": (len(items) - 1) / span if span > 0 else 0.0,
                # the stream's cadence, robust to a few stalls of a loaded machine (unlike rate_hz)
                "period_median_s": float(np.median(np.diff(stamps))),
                "latency_p50_ms": float(np.percentile(latency, 50)),
                "latency_p99_ms": float(np.percentile(latency, 99))}

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
