"""sim_robot_node: the MuJoCo robot behind exactly the ROS interface of a real robot (DESIGN.md §3).

With robot.driver gymnasium it runs the profile's gymnasium env instead (robot_rl/sim/gym_adapter.py),
which adds its observation vector on /robot/state."""
from __future__ import annotations

import json
import queue
import threading
import time

from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from robot_rl.calibration.camera_file import camera_file_path, load_camera_file
from robot_rl.control.lockstep import StepBudget
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node
from robot_rl.sim.driver import Sample, SimDriver

RESEND_S = 1.0  # lockstep: the last observation goes out again after this long without a command


class SimRobotNode(RobotRLNode):
    def __init__(self):
        super().__init__("sim_robot", "sim_robot_node")
        self.driver = self.start_sim_thread()
        self.joint_names = self.profile.robot.joint_names
        self.lockstep = self.driver.clock == "lockstep"
        self.behind_events = 0
        self.last_observation: list[Sample] = []  # lockstep: re-sent while no command comes
        self.observed_at, self.resends = time.monotonic(), 0
        self.budget = StepBudget(self.params.episode_steps if self.lockstep else 0)

        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR)
        self.task_pub = self.create_publisher(String, topics.SIM_TASK_STATE, qos.RELIABLE)
        self.state_pub = (self.create_publisher(JointState, topics.ROBOT_STATE, qos.SENSOR)
                          if self.profile.state_names else None)  # gymnasium: the env's observation
        self.image_pubs = {}
        for cam in self.profile.cameras if self.driver.render else []:
            self.image_pubs[("color", cam.name)] = self.create_publisher(Image, topics.camera_color(cam.name), qos.SENSOR)
            if cam.depth:
                self.image_pubs[("depth", cam.name)] = self.create_publisher(Image, topics.camera_depth(cam.name), qos.SENSOR)
            info_pub = self.create_publisher(CameraInfo, topics.camera_info(cam.name), qos.LATCHED)
            info_pub.publish(self.camera_info(cam))
            self.image_pubs[("info", cam.name)] = info_pub
        self.tactile_pubs = {t.name: self.create_publisher(Image, topics.tactile_image(t.name), qos.SENSOR)
                             for t in self.profile.tactile}

        self.create_subscription(JointState, topics.ROBOT_COMMAND, self.on_command, qos.COMMAND)
        self.create_service(Trigger, topics.ROBOT_RESET, self.on_reset)
        self.create_service(SetBool, topics.ROBOT_ESTOP, self.on_estop)
        self.sim_calls.put((lambda: self.publish(self.driver.observe_all()), None))
        self.publishers_ready.set()
        self.get_logger().info(f"sim robot up: profile {self.profile.name}, {self.driver.clock} clock, "
                               f"{len(self.image_pubs) and len(self.profile.cameras)} cameras, "
                               f"{len(self.tactile_pubs)} tactile sensors"
                               + "".join(f", {j} drifted by {v:+g}" for j, v in getattr(self.driver.robot, "drift", {}).items()))

    def camera_info(self, cam) -> CameraInfo:
        """A calibration file (calibration/<profile>/<camera>.yaml) wins over the sim's own camera model,
        as on a real setup, so calibration results are used from the next start on."""
        calib = load_camera_file(self.profile.name, cam.name, cam.width, cam.height)
        if calib is None:
            fx, fy, cx, cy = self.driver.robot.camera_intrinsics(cam.name)
            distortion, model, source = None, "plumb_bob", "the sim camera model"
        else:
            (fx, fy, cx, cy), source = calib.fx_fy_cx_cy, str(camera_file_path(self.profile.name, cam.name))
            distortion, model = calib.distortion_coefficients, calib.distortion_model
        self.get_logger().info(f"camera {cam.name}: intrinsics from {source}")
        return convert.camera_info_msg(cam.width, cam.height, fx, fy, cx, cy, stamp=self.driver.stamp(),
                                       frame_id=f"{cam.name}_optical_frame", distortion=distortion,
                                       distortion_model=model)

    # -- callbacks (cheap; the sim thread does the work) ----------------------------------------
    def on_command(self, msg: JointState) -> None:
        try:
            q = convert.joint_positions_from_msg(msg, self.joint_names)
            accepted = self.driver.command(q)
        except ValueError as e:
            accepted = self.driver.command(None, error=str(e))
        if not accepted:
            self.get_logger().warning(f"command rejected: {self.driver.envelope.counters.last_reject_reason}",
                                   throttle_duration_sec=1.0)
        elif self.lockstep:
            self.steps_requested.release()

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        def reset():
            state = self.driver.reset()
            self.budget.reset()
            self.publish(self.driver.observe_all())
            return state

        try:
            response.success, response.message = True, json.dumps(self.in_sim_thread(reset))
        except TimeoutError as e:
            response.success, response.message = False, str(e)
        return response

    def on_estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.driver.set_estop(request.data)
        response.success, response.message = True, "e-stop active" if request.data else "e-stop released"
        return response

    # -- the sim thread (owns physics and the GL context, which is bound to one thread) ---------
    def start_sim_thread(self) -> SimDriver:
        self.steps_requested = threading.Semaphore(0)
        self.sim_calls: queue.Queue = queue.Queue()
        self.publishers_ready = threading.Event()
        created: queue.Queue = queue.Queue(maxsize=1)

        def sim_thread() -> None:
            try:
                if self.profile.robot.driver == "gymnasium":
                    from robot_rl.sim.gym_adapter import GymDriver as Driver
                else:
                    Driver = SimDriver
                driver = Driver(self.profile, self.params, stamp_origin=time.time())
            except Exception as e:  # noqa: BLE001 - re-raised in the constructor
                created.put(e)
                return
            created.put(driver)
            try:
                while not self.publishers_ready.wait(0.05):
                    if self.stopping:
                        return
                (self.lockstep_loop if driver.clock == "lockstep" else self.realtime_loop)()
            finally:
                driver.close()

        self.start_worker(sim_thread, "sim")
        driver = created.get(timeout=120)
        if isinstance(driver, Exception):
            raise driver
        return driver

    def in_sim_thread(self, fn, timeout: float = 10.0):
        """Run `fn` in the sim thread between steps and return its result."""
        done: queue.Queue = queue.Queue(maxsize=1)
        self.sim_calls.put((fn, done))
        try:
            ok, value = done.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"sim thread did not answer within {timeout} s") from None
        if not ok:
            raise value
        return value

    def run_sim_calls(self) -> None:
        while not self.sim_calls.empty():
            fn, done = self.sim_calls.get_nowait()
            try:
                result = (True, fn())
            except Exception as e:  # noqa: BLE001 - handed back to the caller
                result = (False, e)
            if done is not None:
                done.put(result)

    def lockstep_loop(self) -> None:
        """One control period per accepted command, as fast as the CPU allows.

        Time stands still until a command comes, so one lost observation (a reader that matched just
        after the reset's, a dropped best-effort image) would stall the graph for good: with no
        command for RESEND_S the last observation and its task state go out again, same stamps (a
        policy that missed the reset's task state waits for it before acting). Readers that had them
        drop them as not newer (policy, teleop); the episode manager does not count a repeat."""
        while not self.stopping:
            self.run_sim_calls()
            if self.steps_requested.acquire(timeout=0.01):
                if self.budget.take():
                    self.publish(self.driver.step_control())
            elif self.last_observation and time.monotonic() - self.observed_at > RESEND_S:
                self.resends += 1
                self.publish(self.last_observation)

    def realtime_loop(self) -> None:
        """Keep sim time in pace with the wall clock, publishing samples as they come due."""
        dt = self.driver.robot.physics_dt / self.driver.realtime_factor
        chunk = max(1, round(0.002 / dt))  # wake at most every ~2 ms
        while not self.stopping:
            self.run_sim_calls()
            lag = time.time() - self.driver.stamp()
            if lag > 0.1:  # fell behind (CPU contention): re-anchor instead of racing to catch up
                self.behind_events += 1
                self.driver.rebase(time.time() - dt)
                continue
            steps = int(lag / dt)  # never step past the wall clock: stamps must not lie in the future
            if steps == 0:
                self.wait(max(dt - lag, 0.0005))
                continue
            self.publish(self.driver.advance(min(chunk, steps)))

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, samples: list[Sample]) -> None:
        if self.lockstep:
            self.last_observation = samples or self.last_observation
            self.observed_at = time.monotonic()
        for s in samples:
            if s.kind == "joint_state":
                pos, vel, eff = s.value
                self.joint_pub.publish(convert.joint_state_msg(self.joint_names, pos, vel, eff, s.stamp))
            elif s.kind == "color":
                self.image_pubs[("color", s.name)].publish(
                    convert.image_to_msg(s.value, "rgb8", s.stamp, f"{s.name}_optical_frame"))
            elif s.kind == "depth":
                self.image_pubs[("depth", s.name)].publish(
                    convert.image_to_msg(s.value, "16UC1", s.stamp, f"{s.name}_optical_frame"))
            elif s.kind == "tactile":
                self.tactile_pubs[s.name].publish(convert.image_to_msg(s.value, "32FC1", s.stamp, f"{s.name}_pad"))
            elif s.kind == "state":
                self.state_pub.publish(convert.joint_state_msg(self.profile.state_names, s.value, stamp=s.stamp))
            elif s.kind == "task_state":
                self.task_pub.publish(String(data=json.dumps({"stamp": s.stamp, **s.value})))

    def diagnostics(self):
        values = self.driver.diagnostics()
        values["behind_events"] = self.behind_events
        values["resent_observations"] = self.resends
        values["commands_past_episode_budget"] = self.budget.refused
        holding = values["holding"] == "true"
        return (WARN if values["estop_active"] == "true" else OK), ("holding" if holding else "tracking command"), values


def main(args=None) -> int:
    return run_node(SimRobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
