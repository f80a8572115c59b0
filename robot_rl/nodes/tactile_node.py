"""tactile_node: one serial taxel sensor -> /tactile/<name>/image (32FC1, calibrated, capture-time stamps).

Thin shell over robot_rl.drivers.tactile: the driver's thread reads the port and calls `on_sample`
per frame, which calibrates into a pre-allocated array and publishes a reused Image message
(no executor round trip per frame at 1 kHz). Diagnostics carry the driver's link counters.
"""
from __future__ import annotations

import logging

import numpy as np
from sensor_msgs.msg import Image

from robot_rl.config import ConfigError
from robot_rl.drivers.tactile import Calibration, SerialTactileDriver, TactileSample
from robot_rl.ros import qos, topics
from robot_rl.ros.node import ERROR, OK, WARN, RobotRLNode, run_node


class TactileNode(RobotRLNode):
    def __init__(self):
        super().__init__("tactile", "tactile_node")
        name = self.params.sensor or self.get_name()
        spec = next((t for t in self.profile.tactile if t.name == name), None)
        if spec is None:
            known = ", ".join(t.name for t in self.profile.tactile) or "none"
            raise ConfigError(f"no tactile sensor {name!r} in the profile (sensors: {known})",
                              f"{self.get_name()}.params.sensor", self.profile.source)
        if not spec.port:
            raise ConfigError(f"tactile sensor {name!r} has no serial port; set tactile[{name}].port",
                              "tactile.port", self.profile.source)
        self.spec = spec
        cal_path = self.params.calibration_file or Calibration.path_for(self.profile.name, name)
        self.calibration = Calibration.load_or_default(cal_path, spec.rows, spec.cols)
        self.values = np.zeros((spec.rows, spec.cols), np.float32)
        self.msg = Image(height=spec.rows, width=spec.cols, encoding="32FC1", is_bigendian=0, step=4 * spec.cols)
        self.msg.header.frame_id = f"{name}_pad"
        self.published = 0
        self.pub = self.create_publisher(Image, topics.tactile_image(name), qos.SENSOR)
        self.driver = SerialTactileDriver(spec.port, spec.baud, spec.rows, spec.cols, rate_hz=spec.rate_hz,
                                          retry_max_s=self.params.retry_max_s,
                                          no_frames_timeout_s=self.params.no_frames_timeout_s, on_log=self.on_log)
        self.start_worker(lambda: self.driver.run(self.on_sample, lambda: self.stopping), "tactile-serial")
        cal = (f"calibration {self.calibration.source} [{self.calibration.units}]" if not self.calibration.is_default
               else f"no calibration file {cal_path}: zero baseline, units {self.calibration.units}")
        self.get_logger().info(f"tactile {name}: {spec.rows}x{spec.cols} at {spec.rate_hz:g} Hz on {spec.port} "
                               f"({spec.baud} baud) -> {topics.tactile_image(name)}; {cal}")

    def on_sample(self, sample: TactileSample) -> None:
        """Driver thread, once per frame: keep it allocation-light."""
        self.calibration.apply(sample.raw, out=self.values)
        stamp = self.msg.header.stamp
        sec = int(sample.stamp)
        stamp.sec, stamp.nanosec = sec, min(int((sample.stamp - sec) * 1e9), 999_999_999)
        self.msg.data = self.values.tobytes()
        self.pub.publish(self.msg)
        self.published += 1

    def on_log(self, level: int, message: str) -> None:
        # one call site per severity: rclpy refuses a severity change at the same call site
        if level >= logging.ERROR:
            self.get_logger().error(message)
        elif level >= logging.WARNING:
            self.get_logger().warning(message)
        else:
            self.get_logger().info(message)

    def diagnostics(self):
        values = self.driver.diagnostics()
        values.update(sensor=self.spec.name, published=self.published, units=self.calibration.units,
                      calibration=self.calibration.source or "none (zero baseline)")
        state = values["port_state"]
        if state in ("missing", "lost", "no_frames", "closed"):
            return ERROR, str(values["last_error"] or f"port {state}"), values
        if state != "streaming":
            return WARN, f"port {state}, waiting for frames", values
        if self.calibration.is_default:
            return WARN, f"streaming {values['rate_hz']} Hz, uncalibrated (no baseline recorded)", values
        return OK, f"streaming {values['rate_hz']} Hz", values


def main(args=None) -> int:
    return run_node(TactileNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
