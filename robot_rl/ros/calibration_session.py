"""The running setup as seen by `robot-rl calibrate`: joint states, camera frames, tactile totals,
commands through the robot's safety envelope, and publishing hand-eye results as TransformStamped."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

class Live:
    """The running setup as seen from this command: joint states, camera frames, tactile totals,
    commands on /robot/command (through the robot's safety envelope), optionally the graph itself."""

    def __init__(self, profile, up: bool = False, overrides=None):
        self.profile, self.up, self.overrides = profile, up, overrides
        self.lock = threading.Lock()  # callbacks append in the probe's thread, the command reads in its own
        self.joint_log: deque = deque(maxlen=200_000)
        self.frames: dict[str, deque] = {}
        self.infos: dict[str, object] = {}

    def __enter__(self) -> "Live":
        from sensor_msgs.msg import JointState

        from robot_rl.ros import qos, topics
        from robot_rl.ros.graph import GraphRunner
        from robot_rl.ros.probe import TopicProbe

        self.runner = GraphRunner(self.profile, overrides=self.overrides, out=None).start() if self.up else None
        self.probe = TopicProbe(name="robot_rl_calibrate", keep=2)
        self.node, self.qos, self.topics = self.probe.node, qos, topics
        self.command_pub = self.node.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND)
        return self

    def __exit__(self, *exc) -> None:
        context = self.probe.node.context
        self.probe.close()
        context.try_shutdown()
        if self.runner is not None:
            self.runner.stop()

    # -- streams --------------------------------------------------------------------------------
    def watch_joints(self) -> None:
        from sensor_msgs.msg import JointState

        from robot_rl.ros import convert

        names = self.profile.robot.joint_names

        def on_joints(msg) -> None:
            q = convert.joint_positions_from_msg(msg, names)
            eff = np.array(msg.effort) if len(msg.effort) == len(msg.name) else np.zeros(0)
            with self.lock:
                self.joint_log.append((convert.from_time(msg.header.stamp), q, eff, time.monotonic()))

        self.node.create_subscription(JointState, self.topics.JOINT_STATES, on_joints,
                                      self.qos.sensor_subscription(self.profile.robot.state_rate_hz))

    def watch_camera(self, name: str, keep: int, side: int = 0) -> None:
        import cv2
        from sensor_msgs.msg import CameraInfo, Image

        from robot_rl.ros import convert

        self.frames[name] = deque(maxlen=keep)

        def on_image(msg) -> None:
            image = convert.msg_to_image(msg)
            if side:  # keep a small grey copy only (time offsets record many frames)
                image = cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), (side, side),
                                   interpolation=cv2.INTER_AREA)
            with self.lock:
                self.frames[name].append((convert.from_time(msg.header.stamp), np.array(image)))

        self.node.create_subscription(Image, self.topics.camera_color(name), on_image, self.qos.sensor_subscription(30))
        self.node.create_subscription(CameraInfo, self.topics.camera_info(name),
                                      lambda m: self.infos.__setitem__(name, m), self.qos.LATCHED)

    def watch_tactile(self, name: str) -> None:
        from sensor_msgs.msg import Image

        from robot_rl.ros import convert

        key = f"tactile/{name}"
        self.frames[key] = deque(maxlen=200_000)

        def on_tactile(msg) -> None:
            with self.lock:
                self.frames[key].append((convert.from_time(msg.header.stamp), float(convert.msg_to_image(msg).sum())))

        self.node.create_subscription(Image, self.topics.tactile_image(name), on_tactile,
                                      self.qos.sensor_subscription(1000))

    def wait_frames(self, name: str, n: int, timeout: float) -> bool:
        return self.probe.wait_for(lambda: len(self.frames[name]) >= n, timeout)

    def wait_joints(self, timeout: float, commands: bool = False) -> str:
        """'' when joint states flow (and, with `commands`, the robot listens on /robot/command)."""
        if not self.probe.wait_for(lambda: len(self.joint_log) >= 5, timeout):
            return f"no joint states on {self.topics.JOINT_STATES} within {timeout:.0f} s"
        if commands and not self.probe.wait_matched(self.command_pub, timeout=timeout):
            return f"nothing subscribes to {self.topics.ROBOT_COMMAND}"
        return ""

    def camera_matrix(self, name: str):
        info = self.infos.get(name)
        return np.array(info.k, np.float64).reshape(3, 3) if info is not None and info.k[0] > 0 else None

    def distortion(self, name: str):
        info = self.infos.get(name)
        return list(info.d) if info is not None and len(info.d) else None

    def joints(self) -> np.ndarray:
        return self.joint_log[-1][1].copy()

    def joint_history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.lock:
            log = list(self.joint_log)
        effort = np.array([e[2] for e in log]) if all(len(e[2]) for e in log) else np.zeros(0)
        return np.array([e[0] for e in log]), np.array([e[1] for e in log]), effort

    def frame_history(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            items = list(self.frames.get(name, []))
        return np.array([s for s, _ in items]), np.array([v for _, v in items])

    # -- motion ---------------------------------------------------------------------------------
    def send(self, q) -> None:
        from robot_rl.ros import convert

        self.command_pub.publish(convert.joint_state_msg(self.profile.robot.joint_names, q, stamp=time.time()))

    def play(self, plan: np.ndarray) -> None:
        """Send each row at the control rate (the robot's envelope limits speed and holds on silence)."""
        period = 1.0 / self.profile.robot.control_rate_hz
        tick = time.monotonic()
        for q in plan:
            self.send(q)
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))

    def move_to(self, target, speed: float = 0.3, timeout: float = 20.0, tol: float = 0.01) -> None:
        """Interpolate from the current pose at `speed` x each joint's max velocity, then hold until
        the arm is within `tol` of the target (or `timeout`)."""
        target = np.asarray(target, np.float64)
        start = self.joints()
        vmax = np.array([j.max_velocity for j in self.profile.robot.joints]) * speed
        duration = float(np.max(np.abs(target - start) / vmax))
        rate = self.profile.robot.control_rate_hz
        steps = max(1, int(np.ceil(duration * rate)))
        self.play(start + (target - start) * np.linspace(1.0 / steps, 1.0, steps)[:, None])
        end = time.monotonic() + timeout
        while time.monotonic() < end and np.max(np.abs(self.joints() - target)) > tol:
            self.play(target[None, :])

    def wait_still(self, deadline: float, moved_from=None, still_s: float = 1.0, tol: float = 0.003) -> bool:
        """Manual mode: wait until the joints have stayed within `tol` for `still_s` (and, if given, away
        from the previous view's pose); False at the deadline."""
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = time.monotonic()
            with self.lock:
                recent = [e[1] for e in self.joint_log if now - e[3] <= still_s]
            if len(recent) >= 3 and np.ptp(np.array(recent), axis=0).max() <= tol and (
                    moved_from is None or np.abs(recent[-1] - moved_from).max() > 0.05):
                return True
        return False

    def still_view(self, camera: str, settle: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(joints, image) with the arm standing still: the first image captured `settle` s after now
        (auto mode: the robot holds its last target when commands stop)."""
        time.sleep(settle)
        q_stamp = self.joint_log[-1][0]
        self.probe.wait_for(lambda: self.frames[camera][-1][0] >= q_stamp, 3.0)
        return self.joints(), self.frames[camera][-1][1]

    def publish_transform(self, result, hold: float) -> None:
        """Latched geometry_msgs/TransformStamped on /calibration/hand_eye/<camera> for `hold` seconds."""
        from geometry_msgs.msg import TransformStamped

        pub = self.node.create_publisher(TransformStamped, self.topics.hand_eye(result.camera), self.qos.LATCHED)
        pub.publish(transform_stamped(result, time.time()))
        time.sleep(max(0.0, hold))


def transform_stamped(result, stamp: float):
    """A hand-eye result as geometry_msgs/TransformStamped (parent frame -> <camera>_optical_frame)."""
    from geometry_msgs.msg import TransformStamped

    from robot_rl.calibration.geometry import quat_xyzw
    from robot_rl.ros import convert

    msg = TransformStamped()
    msg.header.stamp = convert.to_time(stamp)
    msg.header.frame_id, msg.child_frame_id = result.parent_frame, result.child_frame
    tr, rot = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in result.T_parent_camera[:3, 3])
    rot.x, rot.y, rot.z, rot.w = quat_xyzw(result.T_parent_camera)
    return msg
