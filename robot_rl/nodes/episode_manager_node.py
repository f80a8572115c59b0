"""episode_manager_node: runs a fine-tuning session's episodes (robot_rl.control.session) over ROS.

Sim: resets automatically and labels from the sim's ground truth. Real robot: waits for the operator
(`/episode_manager/continue` once the scene is reset, `/episode_manager/stop_episode`,
`/episode_manager/label`). Reports the session's success rate in /diagnostics and /episode/events.
"""
from __future__ import annotations

import json
import time

from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from robot_rl.control.session import EpisodeAborted, EpisodeSession
from robot_rl.ros import qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node


class ServiceError(RuntimeError):
    pass


class EpisodeManagerNode(RobotRLNode):
    def __init__(self):
        super().__init__("episode_manager", "episode_manager_node")
        p = self.params
        self.services_ = {
            "reset": self.create_client(Trigger, topics.ROBOT_RESET),
            "start": self.create_client(Trigger, topics.RECORDER_START),
            "stop": self.create_client(Trigger, topics.RECORDER_STOP),
            "discard": self.create_client(Trigger, topics.RECORDER_DISCARD),
            "label": self.create_client(SetBool, topics.RECORDER_LABEL_SUCCESS),
            "policy": self.create_client(SetBool, topics.POLICY_ENABLE),
        }
        self.session = EpisodeSession(self, max_steps=p.max_steps, label=p.label, reset=p.reset,
                                      step_timeout_s=p.step_timeout_s)
        self.events = self.create_publisher(String, topics.EPISODE_EVENTS, qos.RELIABLE)
        if self.profile.sim is not None:
            self.create_subscription(String, topics.SIM_TASK_STATE, self.on_task_state, qos.RELIABLE)
        self.create_service(Trigger, topics.EPISODE_MANAGER_CONTINUE, self.on_continue)
        self.create_service(Trigger, topics.EPISODE_MANAGER_STOP, self.on_stop)
        self.create_service(SetBool, topics.EPISODE_MANAGER_LABEL, self.on_label)
        self.last_error = ""
        self.start_worker(self.run_session, "session")

    # -- signals --------------------------------------------------------------------------------
    def on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        self.session.step(bool(state.get("success")), state.get("episode"))

    def on_continue(self, request, response):
        self.session.operator_continue()
        response.success, response.message = True, "continuing"
        return response

    def on_stop(self, request, response):
        self.session.operator_stop()
        response.success, response.message = True, "stopping the episode"
        return response

    def on_label(self, request, response):
        self.session.operator_label(request.data)
        response.success, response.message = True, "labelled"
        return response

    # -- SessionBackend (called from the session thread) ----------------------------------------
    def _call(self, name: str, request, timeout: float = 30.0):
        client = self.services_[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise ServiceError(f"service {client.srv_name} not available (is its node running?)")
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            if self.stopping or time.monotonic() > end:
                raise ServiceError(f"service {client.srv_name} did not answer")
            time.sleep(0.002)
        response = future.result()
        if not response.success:
            raise ServiceError(f"{client.srv_name}: {response.message}")
        return response

    def reset(self) -> dict:
        message = self._call("reset", Trigger.Request()).message
        return json.loads(message) if message.startswith("{") else {}

    def start_recording(self) -> None:
        end = time.monotonic() + 10.0
        while True:  # the recorder's start gate waits for fresh streams after a reset
            try:
                self._call("start", Trigger.Request())
                return
            except ServiceError:
                if time.monotonic() > end or self.stopping:
                    raise
                time.sleep(0.05)

    def set_policy(self, enabled: bool) -> None:
        self._call("policy", SetBool.Request(data=enabled))

    def commit(self, success: bool) -> dict:
        self._call("label", SetBool.Request(data=success))
        return json.loads(self._call("stop", Trigger.Request(), timeout=60.0).message)

    def discard(self) -> None:
        self._call("discard", Trigger.Request())

    # -- the session ----------------------------------------------------------------------------
    def run_session(self) -> None:
        target = self.params.episodes
        while not self.stopping and (target == 0 or self.session.stats.episodes < target):
            try:
                result = self.session.run_episode()
            except EpisodeAborted as e:
                self.last_error = str(e)
                self.emit("aborted", reason=str(e))
                continue
            except ServiceError as e:
                self.last_error = str(e)
                self.get_logger().error(f"{e}; retrying in 2 s", throttle_duration_sec=5.0)
                self.wait(2.0)
                continue
            stats = self.session.stats
            self.emit("episode_done", **result, session_episodes=stats.episodes,
                      session_success_rate=round(stats.success_rate(), 4))
        if target and self.session.stats.episodes >= target:
            self.emit("session_done", episodes=self.session.stats.episodes,
                      success_rate=round(self.session.stats.success_rate(), 4))

    def emit(self, event: str, **info) -> None:
        self.events.publish(String(data=json.dumps({"event": event, "stamp": time.time(), **info})))

    def diagnostics(self):
        s = self.session.stats
        values = {"episodes": s.episodes, "successes": s.successes, "aborted": s.aborted,
                  "success_rate": round(s.success_rate(), 4), "success_rate_last20": round(s.success_rate(20), 4),
                  "steps": s.steps, "last_error": self.last_error}
        return (WARN if self.last_error else OK), f"{s.episodes} episodes", values

    def shutdown(self) -> None:
        self.session.stop()
        super().shutdown()


def main(args=None) -> int:
    return run_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
