"""recorder_node: the store's only writer during operation (teleop demos and policy rollouts).

Teleop mode ticks at the control rate (or, on a lockstep sim, once per commanded sim step); rollout
mode ticks on the policy's command stamps. Each tick
records the as-of-joined observation and the command in effect (robot_rl.data.recording). Disk
writes run in the episode writer's thread; services start/stop/discard/label_success; every
transition is published on /episode/events.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from robot_rl.config import ConfigError
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import ACTION, BASE_ACTION, CHUNK_PHASE, JOINTS, RESIDUAL, Recording, open_or_create
from robot_rl.data.schema import StoreError
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node
from robot_rl.ros.streams import subscribe_observations


RECORDER_BUFFER_S = 1.0


RECORDING_CHANGES = ("start", "commit", "discard", "lost")


class RecorderNode(RobotRLNode):
    def __init__(self):
        super().__init__("recorder", "recorder_node")
        p = self.params
        self.store_path = Path(p.store.replace("{profile}", self.profile.name))
        try:
            self.store = open_or_create(self.store_path, self.profile, p.record_depth)
        except StoreError as e:
            raise ConfigError(str(e), "recorder.params.store", self.profile.source) from None
        self.writer = EpisodeWriter(self.store)
        self.rec = Recording(self.profile, self.writer, record_depth=p.record_depth,
                             min_rate_fraction=p.min_rate_fraction, max_invalid_fraction=p.max_invalid_fraction,
                             frames_per_tick=p.mode == "rollout" or p.tick == "command")
        if p.mode == "rollout" and not self.rec.records_phase:
            self.get_logger().warning(f"{self.store_path} predates recorded chunk phases: rollouts go in without "
                                   "them and the learner assumes chunks back to back (exact only in lockstep); "
                                   "a new store records them")
        self.base_hash = ""
        if p.base_checkpoint:
            from robot_rl.policies.checkpoint import checkpoint_hash

            self.base_hash = checkpoint_hash(p.base_checkpoint)
        self.joint_names = self.profile.robot.joint_names
        self.last_event = ""
        self.lost_episodes = 0

        robot = self.profile.robot
        # The store's only writer must not lose samples when its thread stalls (a commit, the GC, a
        # saturated machine): reader queues hold 1 s of every stream, not the default 50 ms. With 50 ms,
        # lockstep fine-tuning on a busy 2-core machine flagged 18 % of rollouts for missing ticks.
        corrections = subscribe_observations(self, self.profile, self.rec, depth=p.record_depth,
                                             buffer_s=RECORDER_BUFFER_S)
        if any(corrections.values()):
            self.get_logger().info(f"applying calibrated stream latencies: {corrections}")
        self.create_subscription(JointState, topics.ROBOT_COMMAND, lambda m: self.on_command(ACTION, m),
                                 qos.RECORDING)
        if p.mode == "rollout":
            self.create_subscription(JointState, topics.POLICY_BASE_ACTION, lambda m: self.on_command(BASE_ACTION, m),
                                     qos.RECORDING)
            self.create_subscription(JointState, topics.POLICY_RESIDUAL, lambda m: self.on_command(RESIDUAL, m),
                                     qos.RECORDING)
            self.create_subscription(JointState, topics.POLICY_CHUNK_PHASE,
                                     lambda m: self.on_command(CHUNK_PHASE, m, [CHUNK_PHASE]), qos.RECORDING)
        self.create_subscription(Bool, topics.TELEOP_INTERVENING, self.on_intervening, qos.RELIABLE)
        self.events = self.create_publisher(String, topics.EPISODE_EVENTS, qos.RELIABLE)
        # the recording state, latched: a node that matches after an episode's start event still learns it
        self.recording_pub = self.create_publisher(Bool, topics.RECORDER_RECORDING, qos.LATCHED)
        self.recording_pub.publish(Bool(data=False))
        self.create_service(Trigger, topics.RECORDER_START, self.on_start)
        self.create_service(Trigger, topics.RECORDER_STOP, self.on_stop)
        self.create_service(Trigger, topics.RECORDER_DISCARD, self.on_discard)
        self.create_service(SetBool, topics.RECORDER_LABEL_SUCCESS, self.on_label)
        if p.mode == "teleop" and p.tick == "timer":
            self.create_timer(1.0 / robot.control_rate_hz, lambda: self.rec.tick(time.time()))
        self.get_logger().info(f"recording to {self.store_path} ({self.store.n_episodes} episodes so far), "
                               f"{p.mode} mode")

    # -- commands -------------------------------------------------------------------------------
    def on_command(self, kind: str, msg: JointState, names: list[str] | None = None) -> None:
        try:
            q = convert.joint_positions_from_msg(msg, names or self.joint_names)
        except ValueError:
            return  # the robot rejects it too: it is not an executed command
        stamp = convert.from_time(msg.header.stamp)
        if self.params.mode == "teleop":
            (self.rec.add_step_command if self.params.tick == "command" else self.rec.add_command)(stamp, q)
            return
        complete = self.rec.add_policy_output(kind, stamp, q)  # rollout: tick on the policy's stamps
        if complete is not None:
            self.rec.tick(stamp, complete)

    def on_intervening(self, msg: Bool) -> None:
        self.rec.intervening = msg.data

    # -- services -------------------------------------------------------------------------------
    def emit(self, event: str, **info) -> None:
        self.last_event = event
        payload = {"event": event, "stamp": time.time(), "episode": self.store.n_episodes, **info}
        if event in RECORDING_CHANGES:  # the state first: whoever heard the event can rely on it
            self.recording_pub.publish(Bool(data=event == "start"))
        self.events.publish(String(data=json.dumps(payload)))

    def on_start(self, request, response):
        if self.rec.recording:
            response.success, response.message = False, "already recording (stop or discard first)"
            return response
        # Teleop on a timer: fresh relative to the wall clock. Rollouts and lockstep teleop: relative to
        # the newest joint state, so a lockstep sim (whose stamps run at the CPU's pace) passes when ready.
        newest = self.rec.aligner.latest_stamp(JOINTS)
        on_wall_clock = self.params.mode == "teleop" and self.params.tick == "timer"
        now = newest if not on_wall_clock and newest is not None else time.time()
        # (lockstep teleop ticks on the commands themselves: a lockstep sim waits for the episode's first one)
        stale = self.rec.stale_streams(now, commands=on_wall_clock)
        if stale:
            response.success = False
            response.message = "not starting, streams not fresh: " + "; ".join(f"{s}: {p}" for s, p in stale.items())
            return response
        source = "demo" if self.params.mode == "teleop" else "rollout"
        self.rec.start(source=source, base_ckpt=self.base_hash if source == "rollout" else "")
        self.emit("start", source=source)
        response.success, response.message = True, f"recording episode {self.store.n_episodes}"
        return response

    def on_stop(self, request, response):
        if not self.rec.recording:
            response.success, response.message = False, "not recording"
            return response
        try:
            index, health = self.rec.stop()
        except (StoreError, OSError) as e:
            self.lost_episodes += 1
            self.emit("lost", reason=str(e))
            self.get_logger().error(f"episode lost: {e}")
            response.success, response.message = False, f"episode lost: {e}"
            return response
        self.emit("commit", index=index, success=self.store.episodes_meta()[index]["success"], health=health)
        if not health["ok"]:
            self.get_logger().warning(f"episode {index} below the health bar: {'; '.join(health['problems'])}")
        response.success, response.message = True, json.dumps({"index": index, "health": health})
        return response

    def on_discard(self, request, response):
        was = self.rec.recording
        self.rec.discard()
        if was:
            self.emit("discard")
        response.success, response.message = True, "discarded" if was else "nothing to discard"
        return response

    def on_label(self, request, response):
        self.rec.label(request.data)
        self.emit("success" if request.data else "failure")
        response.success, response.message = True, "labelled"
        return response

    def diagnostics(self):
        level = WARN if self.lost_episodes else OK
        values = {"store": str(self.store_path), "episodes": self.store.n_episodes,
                  "recording": str(self.rec.recording).lower(), "lost_episodes": self.lost_episodes,
                  "last_event": self.last_event}
        if self.rec.health is not None:  # the open episode, for live status lines
            report = self.rec.health.report()
            values.update({"episode_steps": len(self.rec.health.recorded_stamps),
                           "episode_seconds": round(time.time() - self.rec.started_at, 1),
                           "episode_rate_hz": report["achieved_rate_hz"], "episode_health": "ok" if report["ok"]
                           else "; ".join(report["problems"])})
        return level, ("recording" if self.rec.recording else "idle"), values

    def shutdown(self) -> None:
        super().shutdown()
        self.writer.close()  # discards an open episode: only committed episodes count
        self.store.close()


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
