"""camera_node: one RealSense camera on the ROS topics of DESIGN.md §3 (thin shell over the driver).

Publishes color (rgb8) and depth aligned to color (16UC1, mm) stamped with capture time, and the
latched color camera_info (calibration file if present, else device intrinsics). Device IO runs in
a worker thread; a missing or lost camera is retried there without restarting the node.
"""
from __future__ import annotations

# rclpy (and with it ROS's libfastdds) must load before pyrealsense2: see robot_rl/drivers/realsense.
import rclpy  # noqa: F401  # isort: skip

from pathlib import Path

from sensor_msgs.msg import CameraInfo, Image

from robot_rl.config import ConfigError
from robot_rl.drivers.realsense import CameraFrame, RealSenseCamera, load_calibration
from robot_rl.drivers.realsense.camera import STREAMING, WAITING
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import ERROR, OK, WARN, RobotRLNode, run_node


class CameraNode(RobotRLNode):
    def __init__(self):
        super().__init__("camera", "camera_node")
        self.camera_name = self.params.camera or self.get_name()
        spec = next((c for c in self.profile.cameras if c.name == self.camera_name), None)
        if spec is None:
            known = ", ".join(c.name for c in self.profile.cameras) or "none"
            raise ConfigError(f"no camera named {self.camera_name!r} in the profile (cameras: {known})",
                              f"{self.get_name()}.params.camera", self.profile.source)
        playback = self.params.playback_file
        if playback and not Path(playback).is_file():
            raise ConfigError(f"file not found: {playback}", f"{self.get_name()}.params.playback_file",
                              self.profile.source)
        calibration = load_calibration(self.profile.name, spec.name, spec.width, spec.height)
        self.frame_id = f"{spec.name}_optical_frame"
        self.color_pub = self.create_publisher(Image, topics.camera_color(spec.name), qos.SENSOR)
        self.depth_pub = self.create_publisher(Image, topics.camera_depth(spec.name), qos.SENSOR) if spec.depth else None
        self.info_pub = self.create_publisher(CameraInfo, topics.camera_info(spec.name), qos.LATCHED)
        self._published_intrinsics = None
        self.camera = RealSenseCamera(spec, playback_file=playback, loop=self.params.playback_loop,
                                      calibration=calibration, retry_min_s=min(0.5, self.params.retry_max_s),
                                      retry_max_s=self.params.retry_max_s, log=self._log)
        self.start_worker(lambda: self.camera.run(self.publish), "camera")
        source = f"playback {playback}" if playback else f"serial {spec.serial or '(first found)'}"
        self.get_logger().info(f"camera {spec.name}: {spec.width}x{spec.height}@{spec.fps:g} from {source}")

    def _log(self, level: str, message: str) -> None:
        logger = self.get_logger()
        {"info": logger.info, "warn": logger.warning}.get(level, logger.error)(message)

    def publish(self, frame: CameraFrame) -> None:
        """Worker thread: one frame out, camera_info again whenever the intrinsics change."""
        if frame.intrinsics is not self._published_intrinsics:
            self.info_pub.publish(convert.camera_info_msg(**frame.intrinsics.camera_info_kwargs(),
                                                          stamp=frame.stamp, frame_id=self.frame_id))
            self._published_intrinsics = frame.intrinsics
        self.color_pub.publish(convert.image_to_msg(frame.color, "rgb8", frame.stamp, self.frame_id))
        if self.depth_pub is not None and frame.depth is not None:
            self.depth_pub.publish(convert.image_to_msg(frame.depth, "16UC1", frame.stamp, self.frame_id))

    def diagnostics(self):
        values = self.camera.diagnostics()
        state = values["state"]
        if state == STREAMING:
            return OK, f"streaming {values['fps']:.1f} fps", values
        level = ERROR if state == WAITING or values["last_error"] else WARN
        return level, f"{state}: {values['last_error']}" if values["last_error"] else state, values

    def shutdown(self) -> None:
        self.camera.stop()
        super().shutdown()


def main(args=None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
