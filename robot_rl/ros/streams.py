"""Subscribing a profile's observation streams (joint states, cameras, tactile) into a sink.

The recorder and the policy node both build observations with the same as-of join, so they also
subscribe the same way: same topics, QoS, conversions, stream names, and the same per-stream latency
corrections from `calibration/<setup>/time_offsets.yaml` (robot-rl calibrate time-offset).
`AlignerSink` is the sink of the nodes that act on each complete observation (policy, episode manager).
"""
from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from robot_rl.config import Profile
from robot_rl.data.align import AsOfAligner
from robot_rl.data.recording import JOINTS
from robot_rl.ros import convert, qos, topics


class ObservationSink(Protocol):
    def add_joint_state(self, stamp: float, position: np.ndarray, velocity: np.ndarray) -> None: ...
    # An array stream aligned as "<kind>/<name>": camera images (color, depth) and the low-dim
    # state vector of /robot/state (kind "state", robot_rl.data.recording.STATE).
    def add_image(self, kind: str, camera: str, stamp: float, image: np.ndarray) -> None: ...
    def add_tactile(self, sensor: str, stamp: float, image: np.ndarray) -> None: ...


def subscribe_observations(node: Node, profile: Profile, sink: ObservationSink, depth: bool = False,
                           buffer_s: float = 0.05) -> dict[str, float]:
    """Returns the stamp corrections applied (seconds added per stream; 0 when uncalibrated).
    `buffer_s`: each reader queue holds this much of its stream (see qos.sensor_subscription)."""
    from robot_rl.calibration.time_offset import stamp_corrections

    names = profile.robot.joint_names
    fix = stamp_corrections(profile)

    def on_joint_state(msg: JointState) -> None:
        try:
            position = convert.joint_positions_from_msg(msg, names)
        except ValueError:
            return
        order = [list(msg.name).index(n) for n in names]
        velocity = np.array([msg.velocity[i] for i in order]) if len(msg.velocity) == len(msg.position) \
            else np.zeros(len(names))
        sink.add_joint_state(convert.from_time(msg.header.stamp) + fix["joint_state"], position, velocity)

    node.create_subscription(JointState, topics.JOINT_STATES, on_joint_state,
                             qos.sensor_subscription(profile.robot.state_rate_hz, buffer_s))
    for cam in profile.cameras:
        kinds = ["color", "depth"] if depth and cam.depth else ["color"]
        for kind in kinds:
            topic = topics.camera_color(cam.name) if kind == "color" else topics.camera_depth(cam.name)
            node.create_subscription(
                Image, topic, lambda m, k=kind, c=cam.name: sink.add_image(
                    k, c, convert.from_time(m.header.stamp) + fix[f"{k}/{c}"], convert.msg_to_image(m)),
                qos.sensor_subscription(cam.fps, buffer_s))
    for tac in profile.tactile:
        node.create_subscription(
            Image, topics.tactile_image(tac.name), lambda m, s=tac.name: sink.add_tactile(
                s, convert.from_time(m.header.stamp) + fix[f"tactile/{s}"], convert.msg_to_image(m)),
            qos.sensor_subscription(tac.rate_hz, buffer_s))
    if profile.state_names:
        from robot_rl.data.recording import STATE, STATE_KIND, STATE_NAME

        state_names = profile.state_names

        def on_state(msg: JointState) -> None:
            try:
                values = convert.joint_positions_from_msg(msg, state_names)
            except ValueError:
                return
            sink.add_image(STATE_KIND, STATE_NAME, convert.from_time(msg.header.stamp) + fix.get(STATE, 0.0),
                           values.astype(np.float32))

        node.create_subscription(JointState, topics.ROBOT_STATE, on_state,
                                 qos.sensor_subscription(profile.robot.state_rate_hz, buffer_s))
    return fix


class AlignerSink:
    """Feeds the aligner and wakes the control thread when an observation is complete at a stamp."""

    def __init__(self, aligner: AsOfAligner):
        self.aligner = aligner
        self.complete = threading.Condition()
        self.newest_complete = -np.inf

    def _added(self) -> None:
        stamps = [self.aligner.latest_stamp(s) for s in self.aligner.streams]
        if all(s is not None for s in stamps) and min(stamps) > self.newest_complete:
            with self.complete:
                self.newest_complete = min(stamps)
                self.complete.notify_all()

    def add_joint_state(self, stamp, position, velocity) -> None:
        self.aligner.add(JOINTS, stamp, (position, velocity))
        self._added()

    def add_image(self, kind, camera, stamp, image) -> None:
        self.aligner.add(f"{kind}/{camera}", stamp, image)
        self._added()

    def add_tactile(self, sensor, stamp, image) -> None:
        self.aligner.add(f"tactile/{sensor}", stamp, image)
        self._added()
