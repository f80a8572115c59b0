"""Talk to a running robot graph from outside: watch its streams, command it, reset it, read its
diagnostics, drive the sim's scripted expert through ROS. Used by the demo, tests and evaluation."""
from __future__ import annotations

import json
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from robot_rl.config import Profile
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.probe import TopicProbe


class RobotClient:
    @classmethod
    def open(cls, profile: Profile, name: str) -> "RobotClient":
        """A client in this process's default ROS context (initialised here, shut down by close())."""
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        from robot_rl.ros.env import configure_ros_environment

        configure_ros_environment()
        # Ctrl-C must reach the CLI as KeyboardInterrupt (its finally stops the graph); rclpy's own
        # handler would only shut the context down and leave the command waiting for messages.
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        client = cls(profile, name=name)
        client._owns_context = True
        return client

    def __init__(self, profile: Profile, context=None, name: str = "robot_rl_client"):
        self._owns_context = False
        self.profile = profile
        self.joint_names = profile.robot.joint_names
        self.probe = TopicProbe(name=name, context=context)
        self.watched = self.probe.watch_profile(profile)
        self.probe.watch(topics.DIAGNOSTICS, DiagnosticArray, qos.RELIABLE)
        node = self.probe.node
        self._node_diagnostics: dict[str, dict[str, str]] = {}  # newest key/values per node
        self.diagnostics_count: dict[str, int] = {}  # messages seen per node (tells a new one from a re-read)
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, qos.RELIABLE)
        self.command_pub = node.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND)
        self.reset_client = node.create_client(Trigger, topics.ROBOT_RESET)
        self.estop_client = node.create_client(SetBool, topics.ROBOT_ESTOP)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """'' when joint states flow, the command topic is matched and reset is served; else what is missing."""
        if not self.probe.wait_count(topics.JOINT_STATES, 5, timeout):
            return f"no joint states on {topics.JOINT_STATES} within {timeout:.0f} s"
        if not self.probe.wait_matched(self.command_pub, timeout=timeout):
            return f"nothing subscribes to {topics.ROBOT_COMMAND}"
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            return f"service {topics.ROBOT_RESET} not available"
        return ""

    # -- services -------------------------------------------------------------------------------
    def call(self, client, request, timeout: float = 20.0):
        future = client.call_async(request)
        if not self.probe.wait_for(future.done, timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")
        return future.result()

    def reset(self, clear_streams: bool = True) -> dict:
        """Reset the robot; returns the sim task state (JSON from the reset service).

        `clear_streams` forgets what was captured before the reset (by stamp, so the observation the
        robot publishes right after resetting is kept), so `latest()` is post-reset data.
        """
        response = self.call(self.reset_client, Trigger.Request())
        if not response.success:
            raise RuntimeError(f"reset failed: {response.message}")
        state = json.loads(response.message) if response.message.startswith("{") else {}
        if clear_streams:
            for topic in list(self.probe.arrivals):
                if topic.endswith("camera_info"):  # latched, sent once
                    continue
                if "stamp" in state:
                    self.probe.drop_before(topic, state["stamp"])
                else:
                    self.probe.clear(topic)
            self.probe.wait_count(topics.JOINT_STATES, 1, timeout=10)
        return state

    def estop(self, active: bool) -> bool:
        return self.call(self.estop_client, SetBool.Request(data=active)).success

    # -- streams --------------------------------------------------------------------------------
    def joints(self) -> np.ndarray:
        return np.array(self.probe.latest(topics.JOINT_STATES).msg.position)

    def task_state(self, episode: int | None = None) -> dict | None:
        """Newest sim task state (of sim episode `episode`, if given)."""
        latest = self.probe.latest(topics.SIM_TASK_STATE)
        state = json.loads(latest.msg.data) if latest else None
        return state if state is not None and episode in (None, state.get("episode")) else None

    def send(self, positions, names: list[str] | None = None) -> None:
        self.command_pub.publish(convert.joint_state_msg(names or self.joint_names, positions, stamp=time.time()))

    def stream(self, positions, seconds: float) -> None:
        """Send the same command at the control rate for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send(positions)
            time.sleep(1.0 / self.profile.robot.control_rate_hz)

    def diagnostics(self, node: str, after: float | None = None, timeout: float = 5.0) -> dict[str, str]:
        """Key/values of `node`'s newest /diagnostics status published after wall time `after`."""
        after = time.time() if after is None else after

        def fresh():
            a = self.probe.latest(topics.DIAGNOSTICS)
            return a is not None and a.received > after and any(node in s.name for s in a.msg.status)

        if not self.probe.wait_for(fresh, timeout):
            raise TimeoutError(f"no /diagnostics from {node} within {timeout} s")
        status = next(s for s in self.probe.latest(topics.DIAGNOSTICS).msg.status if node in s.name)
        return {kv.key: kv.value for kv in status.values}

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = status.name.rsplit("/", 1)[-1]
            self._node_diagnostics[node] = {kv.key: kv.value for kv in status.values}
            self.diagnostics_count[node] = self.diagnostics_count.get(node, 0) + 1

    def latest_diagnostics(self, node: str) -> dict[str, str]:
        """`node`'s newest /diagnostics key/values without waiting ({} if none arrived yet)."""
        return dict(self._node_diagnostics.get(node, {}))

    def run_expert_episode(self, expert, seed: int, max_steps: int = 150) -> dict:
        """Reset, then let the scripted expert act at the control rate until success or max_steps."""
        state = self.reset(clear_streams=False)
        episode = state.get("episode")
        expert.reset(seed=seed)
        period = 1.0 / self.profile.robot.control_rate_hz
        next_tick = time.monotonic()
        for step in range(max_steps):
            state = self.task_state(episode) or state
            if state.get("success"):
                return {"success": True, "steps": step}
            self.send(expert.act(self.joints(), state))
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        state = self.task_state(episode) or state
        return {"success": bool(state.get("success")), "steps": max_steps}

    def close(self) -> None:
        self.probe.close()
        if self._owns_context:
            import rclpy

            rclpy.try_shutdown()
