"""episode_manager_node: runs a fine-tuning session's episodes (robot_rl.control.session) over ROS.

Sim: resets automatically and labels from the sim's ground truth. Real robot: waits for the operator
(`/episode_manager/continue` once the scene is reset, `/episode_manager/stop_episode`,
`/episode_manager/label`). Reports the session's success rate in /diagnostics and /episode/events.

`label: classifier`: a reward classifier (robot-rl train-reward) says success instead. The node
subscribes to the observation streams like the recorder and the policy node, and at each control
step (each sim task state; on a real robot each /robot/command) builds the observation at that
step's stamp with the same as-of join, evaluates the classifier in its own thread and hands the
probability to the session, which ends the episode as a success when M consecutive steps are above
the threshold. On the sim the ground truth rides along, so episode_done reports both labels. A
classifier made for another setup stops the node at start-up with one line (exit 2).
"""
from __future__ import annotations

import json
import queue
import threading
import time

from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from robot_rl.config import ConfigError
from robot_rl.control.lockstep import RepeatedTaskStates
from robot_rl.control.session import EpisodeAborted, EpisodeSession
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node


class ServiceError(RuntimeError):
    pass


LISTENER_PATIENCE_S = 30.0


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
        self.reward = self._load_reward_classifier() if p.label == "classifier" else None
        self.session = EpisodeSession(self, max_steps=p.max_steps, label=p.label, reset=p.reset,
                                      step_timeout_s=p.step_timeout_s,
                                      detector=self.reward.detector() if self.reward else None)
        self.events = self.create_publisher(String, topics.EPISODE_EVENTS, qos.RELIABLE)
        if self.profile.sim is not None:
            self.task_states = RepeatedTaskStates()
            self.create_subscription(String, topics.SIM_TASK_STATE, self.on_task_state, qos.RELIABLE)
        if self.reward is not None:
            from robot_rl.data.align import AsOfAligner
            from robot_rl.data.recording import ACTION, stream_max_ages
            from robot_rl.ros.streams import AlignerSink, subscribe_observations

            ages = {s: a for s, a in stream_max_ages(self.profile).items() if s != ACTION}
            self.sink = AlignerSink(AsOfAligner(ages))
            subscribe_observations(self, self.profile, self.sink)
            self.reward_steps: queue.Queue = queue.Queue()  # (stamp, sim ground truth | None, episode)
            self.reward_stats = {"evaluated": 0, "invalid": 0, "last_probability": None}
            if self.profile.sim is None:  # a real robot: each policy command is a control step
                self.create_subscription(JointState, topics.ROBOT_COMMAND, self.on_command, qos.COMMAND)
            self.start_worker(self.reward_loop, "reward")
        self.create_service(Trigger, topics.EPISODE_MANAGER_CONTINUE, self.on_continue)
        self.create_service(Trigger, topics.EPISODE_MANAGER_STOP, self.on_stop)
        self.create_service(SetBool, topics.EPISODE_MANAGER_LABEL, self.on_label)
        self.last_error = ""
        self.operator_heard = threading.Event()
        if p.await_operator:
            self.create_subscription(Bool, topics.TELEOP_INTERVENING, lambda _: self.operator_heard.set(), qos.RELIABLE)
        self.start_worker(self.run_session, "session")

    def _load_reward_classifier(self):
        import torch

        from robot_rl.reward.checkpoint import load_classifier

        torch.set_num_threads(1)  # one frame per step: threads would only compete with the learner
        try:
            clf = load_classifier(self.params.reward_checkpoint, self.profile)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ConfigError(str(e), f"{self.get_name()}.params.reward_checkpoint", self.profile.source) from None
        self.get_logger().info(f"success from reward classifier {clf.path} (threshold {clf.threshold:.3f}, "
                               f"{clf.consecutive} consecutive steps; obs {', '.join(clf.obs_keys)})")
        return clf

    # -- signals --------------------------------------------------------------------------------
    def on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        if not self.task_states.is_new(state):
            return  # the lockstep sim's re-send of a step already counted
        if self.reward is None:
            self.session.step(bool(state.get("success")), state.get("episode"))
        else:  # the classifier's thread steps the session once it has evaluated this step
            self.reward_steps.put((float(state.get("stamp", time.time())), bool(state.get("success")),
                                   state.get("episode")))

    def on_command(self, msg: JointState) -> None:
        self.reward_steps.put((convert.from_time(msg.header.stamp), None, None))

    def reward_loop(self) -> None:
        """Evaluate the classifier on the observation at each control step's stamp, in order."""
        from robot_rl.data.recording import observation_values

        while not self.stopping:
            try:
                stamp, truth, episode = self.reward_steps.get(timeout=0.1)
            except queue.Empty:
                continue
            with self.sink.complete:  # every stream's sample of this step (lockstep: same stamp) has arrived
                self.sink.complete.wait_for(lambda: self.sink.newest_complete >= stamp or self.stopping, timeout=1.0)
            obs = self.sink.aligner.observe(stamp)
            probability = None
            if obs.valid:
                probability = self.reward.probability(observation_values(self.profile, obs.values))
                self.reward_stats["evaluated"] += 1
                self.reward_stats["last_probability"] = round(probability, 4)
            else:
                self.reward_stats["invalid"] += 1
                self.get_logger().warning(f"reward classifier: no valid observation: {obs.reason}",
                                       throttle_duration_sec=2.0)
            self.session.step(truth, episode, reward=probability)

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
    def operator_ready(self) -> bool:
        """Heard on /teleop/intervening, and every node publishing there also subscribes to the
        recorder's events (the sim expert acts only once it hears an episode start: a teleop node
        that matched after the first start sat out the whole first episode)."""
        if not self.operator_heard.is_set():
            return False
        operators = {(i.node_namespace, i.node_name) for i in self.get_publishers_info_by_topic(topics.TELEOP_INTERVENING)}
        listening = {(i.node_namespace, i.node_name) for i in self.get_subscriptions_info_by_topic(topics.EPISODE_EVENTS)}
        return bool(operators) and operators <= listening

    def await_operator(self) -> None:
        """The policy node and the recorder discover the teleop node about when this node sees it;
        one more second lets their subscriptions match too."""
        start, note_at = time.monotonic(), 10.0
        while self.wait(0.2) and not self.operator_ready():
            if time.monotonic() - start > note_at:
                self.get_logger().info(f"waiting for the operator's teleop node on {topics.TELEOP_INTERVENING} "
                                       f"({note_at:.0f} s)")
                note_at += 10.0
        self.wait(1.0)

    def await_listeners(self, wanted: int, patience_s: float = LISTENER_PATIENCE_S) -> None:
        """Every episode's events reach the session's client: a lost episode_done is a lost episode in
        its count and report. After `patience_s` the session starts anyway, with a warning."""
        start = time.monotonic()
        while self.wait(0.1) and self.events.get_subscription_count() < wanted:
            if time.monotonic() - start > patience_s:
                self.get_logger().warning(
                    f"{self.events.get_subscription_count()} of {wanted} listeners on {topics.EPISODE_EVENTS} after "
                    f"{patience_s:.0f} s; starting anyway (they may miss the first episodes' events)")
                return

    def run_session(self) -> None:
        if self.params.await_listeners:
            self.await_listeners(self.params.await_listeners)
        if self.params.await_operator:
            self.await_operator()
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
                      session_success_rate=round(stats.success_rate(), 4), **self._agreement("session_"))
        if target and self.session.stats.episodes >= target:
            self.emit("session_done", episodes=self.session.stats.episodes,
                      success_rate=round(self.session.stats.success_rate(), 4), **self._agreement())

    def _agreement(self, prefix: str = "") -> dict:
        """Classifier vs sim ground truth over the session (only when both labels exist)."""
        s = self.session.stats
        if not s.compared:
            return {}
        return {f"{prefix}classifier_agreement": round(s.agreement(), 4), f"{prefix}classifier_compared": s.compared}

    def emit(self, event: str, **info) -> None:
        self.events.publish(String(data=json.dumps({"event": event, "stamp": time.time(), **info})))

    def diagnostics(self):
        s = self.session.stats
        values = {"episodes": s.episodes, "successes": s.successes, "aborted": s.aborted,
                  "success_rate": round(s.success_rate(), 4), "success_rate_last20": round(s.success_rate(20), 4),
                  "steps": s.steps, "last_error": self.last_error, **self._agreement()}
        if self.reward is not None:
            values.update({f"reward_{k}": v for k, v in self.reward_stats.items()})
        return (WARN if self.last_error else OK), f"{s.episodes} episodes", values

    def shutdown(self) -> None:
        self.session.stop()
        super().shutdown()


def main(args=None) -> int:
    return run_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
