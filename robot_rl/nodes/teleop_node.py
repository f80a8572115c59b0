"""teleop_node: a teleop device (keyboard, SpaceMouse, leader arm, sim expert) at the control rate.

Publishes /teleop/command and /teleop/intervening every tick (and /robot/command when `drive_robot`,
i.e. collection without a policy); device events (start/stop/discard/success/failure) call the
recorder's services. With `tick: observation` (the sim expert on a lockstep sim) each sim step is one
tick, once its joint state and task state have both arrived, and the command carries the step's
stamp: collection runs at the CPU's pace and the recorder joins each command to its step exactly.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from robot_rl.config import ConfigError
from robot_rl.drivers.teleop.base import DISCARD, FAILURE, START, STOP, SUCCESS, DeviceError, TeleopInput
from robot_rl.drivers.teleop.registry import make_device
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import ERROR, OK, WARN, RobotRLNode, run_node


STAMP_TOLERANCE_S = 1e-4  # one sim step's messages carry one stamp (float round trips aside)
STALL_S = 2.0  # observation ticks: no step for this long = one was lost; command again


class TeleopNode(RobotRLNode):
    def __init__(self):
        super().__init__("teleop", "teleop_node")
        self.joint_names = self.profile.robot.joint_names
        try:
            self.device = make_device(self.params.device, self.profile, self.params)
        except DeviceError as e:  # a configuration mistake: say so once and exit
            raise ConfigError(str(e), "device", self.profile.source) from None
        if self.params.tick == "observation" and self.profile.sim is None:
            raise ConfigError("tick: observation needs a simulated robot in lockstep (no sim in this profile)",
                              "tick", self.profile.source)
        self.joint_pos: np.ndarray | None = None
        self.joint_stamp = -np.inf  # stamp of joint_pos
        self.task_state: dict | None = None
        self.ticked_stamp = -np.inf  # observation ticks: the newest step already acted on
        self.ticked_at = 0.0  # monotonic time of the last tick
        self.ticks = self.commands = self.device_errors = 0
        self.last_error = ""
        self.events_sent: list[str] = []
        self.recording = False
        self.hold: np.ndarray | None = None
        self.device_ready = False
        self.retry_delay = 0.5
        self.retry_timer = self.create_timer(self.retry_delay, self.open_device)
        self.open_device()

        self.create_subscription(JointState, topics.JOINT_STATES, self.on_joint_state,
                                 qos.sensor_subscription(self.profile.robot.state_rate_hz))
        if self.profile.sim is not None:
            self.create_subscription(String, topics.SIM_TASK_STATE, self.on_task_state, qos.RELIABLE)
        self.teleop_pub = self.create_publisher(JointState, topics.TELEOP_COMMAND, qos.RELIABLE)
        self.intervening_pub = self.create_publisher(Bool, topics.TELEOP_INTERVENING, qos.RELIABLE)
        self.robot_pub = self.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND) if self.params.drive_robot else None
        self.recorder = {
            START: self.create_client(Trigger, topics.RECORDER_START),
            STOP: self.create_client(Trigger, topics.RECORDER_STOP),
            DISCARD: self.create_client(Trigger, topics.RECORDER_DISCARD),
            SUCCESS: self.create_client(SetBool, topics.RECORDER_LABEL_SUCCESS),
        }
        self.create_subscription(String, topics.EPISODE_EVENTS, self.on_episode_event, qos.RELIABLE)
        # latched: a teleop node whose event subscription matched after an episode's start (a loaded
        # machine) still learns that it is recording, instead of holding through the whole episode
        self.create_subscription(Bool, topics.RECORDER_RECORDING, lambda m: self.set_recording(m.data), qos.LATCHED)
        self.status = StatusLine(self.params.device) if sys.stderr.isatty() else None
        if self.status is not None:
            self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.status.on_diagnostics, qos.RELIABLE)
            self.create_timer(0.5, self.status.draw)
        if self.params.tick == "timer":
            self.create_timer(1.0 / self.profile.robot.control_rate_hz, self.tick)
        else:  # a lost joint state would stall a lockstep loop forever: act again on the newest one
            self.create_timer(STALL_S, self.on_stall)
        self.get_logger().info(f"teleop device '{self.params.device}'"
                               + (", driving /robot/command" if self.robot_pub else ""))

    def open_device(self) -> None:
        """Open the device; a missing or unplugged device is retried with back-off, never a crash loop."""
        if self.device_ready:
            return
        try:
            self.device.start()
        except DeviceError as e:
            self.last_error = str(e)
            self.get_logger().error(f"{e} (retrying in {self.retry_delay:.1f} s)")
            self.retry_timer.cancel()
            self.retry_delay = min(2 * self.retry_delay, 5.0)
            self.retry_timer = self.create_timer(self.retry_delay, self.open_device)
            return
        self.device_ready, self.last_error = True, ""
        self.retry_timer.cancel()

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.joint_pos = convert.joint_positions_from_msg(msg, self.joint_names)
        except ValueError:
            return
        self.joint_stamp = convert.from_time(msg.header.stamp)
        self.tick_on_step()

    def on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        if self.task_state is not None and state.get("episode") != self.task_state.get("episode"):
            self.hold = None  # the sim was reset: forget the old pose (unless it arrived already)
            if self.joint_stamp < state.get("stamp", np.inf) - STAMP_TOLERANCE_S:
                self.joint_pos = None
        self.task_state = state
        self.tick_on_step()

    def tick_on_step(self) -> None:
        """Observation ticks: act once per sim step, when its joint state and task state are both in.
        Before an episode starts the sim stays still (no hold commands): one command per step keeps
        exactly one step in flight, so each recorded command is the one that acted on its step."""
        if self.params.tick != "observation" or self.joint_pos is None or self.task_state is None:
            return
        if self.waiting_for_recorder():
            return  # the recorder's start event ticks on the reset's observation
        step = self.joint_stamp
        if self.task_state.get("stamp", -np.inf) >= step - STAMP_TOLERANCE_S and step > self.ticked_stamp:
            self.ticked_stamp = step
            self.tick(stamp=step)

    def on_stall(self) -> None:
        if self.waiting_for_recorder():
            return
        if self.joint_pos is not None and time.monotonic() - self.ticked_at > STALL_S:
            self.tick(stamp=self.joint_stamp)

    def on_episode_event(self, msg: String) -> None:
        event = json.loads(msg.data).get("event")
        if self.status is not None:
            self.status.last_event = event
        if event == START:
            self.set_recording(True)
        elif event in ("commit", DISCARD, "lost"):
            self.set_recording(False)

    def set_recording(self, recording: bool) -> None:
        was, self.recording = self.recording, recording
        if recording and not was:
            self.tick_on_step()  # lockstep: the episode's first step waits for this node's command

    def waiting_for_recorder(self) -> bool:
        """The sim expert waits for the recorder to start each episode, so demos begin at rest."""
        return self.params.device == "expert" and not self.recording and self.recorder[START].service_is_ready()

    def tick(self, stamp: float | None = None) -> None:
        if self.joint_pos is None or not self.device_ready:
            return  # no robot state or no device yet: nothing to teleoperate
        self.ticks += 1
        self.ticked_at = time.monotonic()
        if self.waiting_for_recorder():
            self.hold = self.joint_pos.copy() if self.hold is None else self.hold
            inp = TeleopInput(target=self.hold)
        else:
            self.hold = None
            inp = self.read_device()
            if inp is None:
                return
        self.publish(inp, time.time() if stamp is None else stamp)

    def read_device(self) -> TeleopInput | None:
        try:
            return self.device.read(self.joint_pos, self.task_state)
        except DeviceError as e:
            self.device_errors += 1
            self.last_error = str(e)
            self.get_logger().error(str(e), throttle_duration_sec=2.0)
            return None

    def publish(self, inp: TeleopInput, stamp: float) -> None:
        if inp.target is not None:
            msg = convert.joint_state_msg(self.joint_names, inp.target, stamp=stamp)
            self.teleop_pub.publish(msg)
            if self.robot_pub is not None:
                self.robot_pub.publish(msg)
            self.commands += 1
        self.intervening_pub.publish(Bool(data=bool(inp.intervening)))
        for event in inp.events:
            self.send_event(event)

    def send_event(self, event: str) -> None:
        """Forward a device event to the recorder (fire and forget; the recorder reports on /episode/events)."""
        self.events_sent.append(event)
        if event in (SUCCESS, FAILURE):
            client, request = self.recorder[SUCCESS], SetBool.Request(data=event == SUCCESS)
        else:
            client, request = self.recorder[event], Trigger.Request()
        if not client.service_is_ready():
            self.get_logger().warning(f"'{event}' pressed but no recorder is running ({client.srv_name})")
            return
        client.call_async(request)

    def diagnostics(self):
        level = ERROR if self.last_error else (WARN if self.joint_pos is None else OK)
        message = self.last_error or ("waiting for joint states" if self.joint_pos is None else "teleoperating")
        return level, message, {"device": self.params.device, "ticks": self.ticks, "commands": self.commands,
                                "device_errors": self.device_errors, "events": ",".join(self.events_sent[-5:])}

    def shutdown(self) -> None:
        super().shutdown()
        if self.device_ready:
            self.device.close()


class StatusLine:
    """The operator's live one-liner: recording?, episode, duration, rate, health (from the recorder)."""

    def __init__(self, device: str):
        self.device = device
        self.recorder: dict[str, str] = {}
        self.last_event = ""

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("recorder"):
                self.recorder = {kv.key: kv.value for kv in status.values}

    def text(self) -> str:
        r = self.recorder
        if not r:
            return f"no recorder running | device {self.device}"
        if r.get("recording") == "true":
            return (f"\033[31m● REC\033[0m episode {r.get('episodes')}  {r.get('episode_seconds', '0')} s  "
                    f"{r.get('episode_rate_hz', '0')} Hz  health {r.get('episode_health', 'ok')} | device {self.device}")
        return f"○ idle  {r.get('episodes')} episodes  last: {self.last_event or '-'} | device {self.device}"

    def draw(self) -> None:
        sys.stderr.write("\r\033[K" + self.text())
        sys.stderr.flush()


def main(args=None) -> int:
    return run_node(TeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
