"""robot_node: the real Dynamixel follower arm behind exactly the sim robot's ROS interface (DESIGN.md §3).

/robot/joint_states at the profile's state rate, /robot/command through the safety envelope,
/robot/reset (slow move home), /robot/estop, /diagnostics (envelope counters, port, silent servo ids).
A missing port, wrong baud or unplugged adapter is reported on /diagnostics and the log with what to
check, and the node retries with back-off instead of exiting into a crash loop.
"""
from __future__ import annotations

import json
import time

from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from robot_rl.config import ConfigError
from robot_rl.drivers.dynamixel.bus import BusError
from robot_rl.drivers.dynamixel.robot import FollowerArm, JointSample
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import ERROR, OK, WARN, RobotRLNode, run_node


class RobotNode(RobotRLNode):
    def __init__(self):
        super().__init__("robot", "robot_node")
        if self.profile.robot.driver != "dynamixel":
            raise ConfigError(f"robot_node drives a Dynamixel arm, but robot.driver is {self.profile.robot.driver!r} "
                              f"(use sim_robot_node for mujoco_sim)", "robot.driver", self.profile.source)
        self.arm = FollowerArm(self.profile, home_speed_scale=self.params.home_speed_scale)
        self.joint_names = self.profile.robot.joint_names
        self.last_error = ""
        self.connects = 0
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR)
        self.create_subscription(JointState, topics.ROBOT_COMMAND, self.on_command, qos.COMMAND)
        self.create_service(Trigger, topics.ROBOT_RESET, self.on_reset)
        self.create_service(SetBool, topics.ROBOT_ESTOP, self.on_estop)
        self.start_worker(self.arm_loop, "arm")

    # -- the arm thread -------------------------------------------------------------------------
    def arm_loop(self) -> None:
        delay = 0.5
        try:
            while not self.stopping:
                try:
                    self.arm.connect()
                    self.connects += 1
                    self.last_error, delay = "", 0.5
                    self.get_logger().info(f"follower arm connected on {self.profile.follower.port}: "
                                           f"{self.arm.bus.map.describe(self.arm.bus.ids)}; holding in place")
                    self.arm.run(lambda: self.stopping, self.publish, self.wait)
                except BusError as e:
                    self.last_error = str(e)
                    self.get_logger().error(f"{e} (retrying in {delay:.1f} s)")
                    self.arm.disconnect(torque_off=False)
                    self.wait(delay)
                    delay = min(2 * delay, self.params.retry_max_s)
        finally:  # also when shutdown races a publish: never leave the torque state to chance
            self.arm.disconnect(torque_off=self.params.torque_off_on_exit)

    def publish(self, s: JointSample) -> None:
        self.joint_pub.publish(convert.joint_state_msg(self.joint_names, s.position, s.velocity, s.effort, s.stamp))

    # -- callbacks ------------------------------------------------------------------------------
    def on_command(self, msg: JointState) -> None:
        try:
            accepted = self.arm.command(convert.joint_positions_from_msg(msg, self.joint_names))
        except ValueError as e:
            accepted = self.arm.command(None, error=str(e))
        if not accepted:
            self.get_logger().warning(f"command rejected: {self.arm.envelope.counters.last_reject_reason}",
                                   throttle_duration_sec=1.0)

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        start = time.monotonic()
        homing = self.arm.start_homing()
        if not homing.done.wait(max(0.0, homing.deadline - time.time()) + 1.0):
            homing.finish(False, "reset timed out")
        response.success = homing.ok
        response.message = json.dumps({"homed": True, "seconds": round(time.monotonic() - start, 2)}) \
            if homing.ok else f"reset failed: {homing.message}"
        return response

    def on_estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.arm.set_estop(request.data)
        response.success, response.message = True, "e-stop active" if request.data else "e-stop released"
        return response

    def diagnostics(self):
        values = self.arm.diagnostics()
        values.update({"connects": self.connects, "last_error": self.last_error})
        if not self.arm.connected:
            return ERROR, self.last_error or "connecting", values
        if self.arm.missing:
            return ERROR, (f"servo {self.arm.bus.map.describe(self.arm.missing)} stopped answering on "
                           f"{self.profile.follower.port}; holding"), values
        if self.arm.envelope.estopped:
            return WARN, "e-stop active", values
        return OK, "holding" if values["holding"] == "true" else "tracking command", values


def main(args=None) -> int:
    return run_node(RobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
