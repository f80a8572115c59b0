"""`robot-rl calibrate camera|handeye|tactile|time-offset|board`: collect calibration data from a running
setup (or start it with --up), solve with robot_rl.calibration, write calibration/<setup>/*.yaml.
Nodes load the files on their next start. Nothing is written when a calibration fails; the message
says what to collect instead. See docs/calibration.md.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from robot_rl.calibration.board import DEFAULT_BOARD, Board, load_board, write_printable
from robot_rl.calibration.files import CalibrationError
from robot_rl.config import ConfigError, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="camera intrinsics, hand-eye, tactile scale, time offsets, boards")
    cal = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    def common(q, camera=True):
        q.add_argument("--profile", default="sim")
        if camera:
            q.add_argument("--camera", required=True, help="profile camera name")
            q.add_argument("--board", default=DEFAULT_BOARD, help="board name under calibration/boards or YAML path")
        q.add_argument("--up", action="store_true", help="start the profile's robot graph for the run")
        q.add_argument("--timeout", type=float, default=600.0, help="give up collecting after this many seconds")
        q.add_argument("--out", type=Path, default=None, help="output file (default: calibration/<profile>/...)")

    q = cal.add_parser("camera", help="intrinsics from ChArUco views of the live camera (or --images DIR)")
    common(q)
    q.add_argument("--views", type=int, default=15, help="views to collect (at least 8)")
    q.add_argument("--images", type=Path, default=None, help="calibrate from image files in this folder instead")
    q.add_argument("--period", type=float, default=0.7, help="seconds between view attempts")
    q.set_defaults(func=run_camera)

    q = cal.add_parser("handeye", help="camera pose relative to the flange (wrist camera) or the base (fixed)")
    common(q)
    q.add_argument("--mount", choices=["hand", "fixed"], default=None, help="default: hand if the name has 'wrist'")
    q.add_argument("--mode", choices=["auto", "manual"], default="auto",
                   help="auto: drive poses around the current one via /robot/command; manual: you move the arm")
    q.add_argument("--poses", type=int, default=14)
    q.add_argument("--amplitude", type=float, default=0.25, help="auto: max joint offset (rad) from the start pose")
    q.add_argument("--hold", type=float, default=3.0, help="keep publishing the TransformStamped this long")
    q.set_defaults(func=run_handeye)

    q = cal.add_parser("tactile", help="zero + force scale from a reference load, dead/noisy taxels (serial sensor)")
    common(q, camera=False)
    q.add_argument("--sensor", required=True)
    q.add_argument("--load-newtons", type=float, required=True, help="reference load, N (mass kg x 9.81)")
    q.add_argument("--seconds", type=float, default=2.0)
    q.add_argument("--per-taxel", action="store_true", help="flat press loading every taxel alike: one gain each")
    q.add_argument("--port", default="", help="override the profile's port")
    q.add_argument("--yes", action="store_true", help="do not wait for Enter before the loaded recording")
    q.set_defaults(func=run_tactile)

    q = cal.add_parser("time-offset", help="camera/tactile latency vs joint states from a wrist wiggle")
    common(q, camera=False)
    q.add_argument("--seconds", type=float, default=8.0)
    q.add_argument("--max-lag", type=float, default=0.4)
    q.add_argument("--amplitude", type=float, default=0.35, help="wiggle amplitude (rad) of the wrist joints")
    q.add_argument("--squeeze", action="store_true", help="also squeeze a held object for the tactile latency")
    q.add_argument("--camera-delay-s", type=float, default=None, help="sim with --up: inject this camera delay")
    q.set_defaults(func=run_time_offset)

    q = cal.add_parser("board", help="write a printable ChArUco board (PNG or PDF) at a stated DPI")
    q.add_argument("--board", default=DEFAULT_BOARD)
    q.add_argument("--out", type=Path, required=True, help="FILE.png or FILE.pdf")
    q.add_argument("--dpi", type=float, default=300.0)
    q.set_defaults(func=run_board)


def _fail(e: Exception) -> int:
    print(f"robot-rl calibrate: {e}\nno file written", file=sys.stderr)
    return 1


def _camera_spec(profile, name: str):
    spec = next((c for c in profile.cameras if c.name == name), None)
    if spec is None:
        raise ConfigError(f"no camera {name!r} (cameras: {', '.join(c.name for c in profile.cameras) or 'none'})",
                          "cameras", profile.source)
    return spec


# -- board ----------------------------------------------------------------------------------------
def run_board(args) -> int:
    spec = load_board(args.board)
    out, square = write_printable(spec, args.out, args.dpi)
    w, h = spec.size_m
    print(f"wrote {out}: {spec.describe()}, board {w * 1e3:.0f} x {h * 1e3:.0f} mm at {args.dpi:g} dpi "
          f"(squares print as {square * 1e3:.2f} mm). Print at 100 % scale, measure a square, and correct "
          f"square_length in the board file if it differs.")
    return 0


# -- camera intrinsics ----------------------------------------------------------------------------
def run_camera(args) -> int:
    from robot_rl.calibration.camera_file import camera_file_path, write_camera_file
    from robot_rl.calibration.intrinsics import IntrinsicsCalibrator

    profile = load_profile(args.profile)
    spec = _camera_spec(profile, args.camera)
    board = Board(load_board(args.board))
    print(f"== camera intrinsics of {spec.name} ({profile.name}) with {board.spec.describe()}")
    cal = None
    if args.images is not None:
        import cv2

        files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                print(f"  {f.name}: not a readable image, skipped")
                continue
            image = image[:, :, ::-1]
            cal = cal or IntrinsicsCalibrator(board, (image.shape[1], image.shape[0]), min_views=min(8, args.views))
            print(f"  {f.name}: {cal.add_view(image).message}")
        if cal is None:
            return _fail(CalibrationError(f"no images (.png/.jpg) in {args.images}"))
    else:
        with Live(profile, args.up) as live:
            live.watch_camera(spec.name, keep=1)
            if not live.wait_frames(spec.name, 1, 15.0):
                return _fail(CalibrationError(f"no images from camera {spec.name} within 15 s: start the setup "
                                              f"(robot-rl up {profile.name}) or pass --up"))
            stamp, image = live.frames[spec.name][-1]
            cal = IntrinsicsCalibrator(board, (image.shape[1], image.shape[0]), guess=live.camera_matrix(spec.name),
                                       min_views=min(8, args.views))
            print("move the board through the image: all regions, tilted 20-45 deg left/right/up/down; Ctrl-C ends")
            deadline, last = time.monotonic() + args.timeout, stamp
            try:
                while time.monotonic() < deadline and not (cal.ready and len(cal.views) >= args.views):
                    time.sleep(args.period)
                    stamp, image = live.frames[spec.name][-1]
                    if stamp != last:
                        last = stamp
                        result = cal.add_view(image)
                        print(f"  {result.message}" + (f"  [{'; '.join(cal.hints())}]" if result.accepted else ""))
            except KeyboardInterrupt:
                print("  stopped collecting")
    try:
        result = cal.calibrate()
        print(f"calibrated {result.summary()}")
        if (result.width, result.height) != (spec.width, spec.height):
            result = result.scaled(spec.width, spec.height)  # refuses another aspect ratio
            print(f"scaled to the profile's {spec.width}x{spec.height}: {result.summary()}")
    except CalibrationError as e:
        return _fail(e)
    out = args.out or camera_file_path(profile.name, spec.name)
    meta = {**result.meta(), "views": len(cal.views)}
    write_camera_file(out, result.width, result.height, result.camera_matrix, result.distortion, meta=meta)
    print(f"== wrote {out}; the camera node uses it from its next start")
    return 0


# -- hand-eye -------------------------------------------------------------------------------------
def run_handeye(args) -> int:
    from robot_rl.calibration.camera_file import load_camera_file
    from robot_rl.calibration.handeye import HandEyeCalibrator, calibration_poses, handeye_path
    from robot_rl.calibration.kinematics import ChainFK

    profile = load_profile(args.profile)
    spec = _camera_spec(profile, args.camera)
    mount = args.mount or ("hand" if "wrist" in spec.name else "fixed")
    try:
        fk = ChainFK.of(profile)
    except CalibrationError as e:
        return _fail(e)
    board = Board(load_board(args.board))
    with Live(profile, args.up) as live:
        live.watch_joints()
        live.watch_camera(spec.name, keep=1)
        problem = live.wait_joints(15.0, commands=args.mode == "auto")
        if problem or not live.wait_frames(spec.name, 1, 15.0):
            return _fail(CalibrationError(f"{problem or f'no images from camera {spec.name} within 15 s'}: start the "
                                          f"setup (robot-rl up {profile.name}) or pass --up"))
        calib = load_camera_file(profile.name, spec.name, spec.width, spec.height)
        if calib is None:  # fall back on the latched camera_info (device or sim intrinsics)
            live.probe.wait_for(lambda: spec.name in live.infos, 10.0)
        K = np.array(calib.camera_matrix) if calib else live.camera_matrix(spec.name)
        if K is None:
            return _fail(CalibrationError(f"no intrinsics for {spec.name}: run robot-rl calibrate camera first"))
        dist = calib.distortion_coefficients if calib else live.distortion(spec.name)
        print(f"== hand-eye of {spec.name} (mount {mount}: camera in "
              f"{fk.spec.flange_frame if mount == 'hand' else fk.spec.base_frame}), intrinsics from "
              f"{'the calibration file' if calib else 'camera_info'}")
        cal = HandEyeCalibrator(board, K, dist, fk, mount, spec.name)
        center = live.joints()
        targets = (calibration_poses(center, profile.robot.joints, args.poses, args.amplitude,
                                     fixed=(profile.robot.gripper_joint,)) if args.mode == "auto" else None)
        deadline = time.monotonic() + args.timeout
        try:
            for k in range(args.poses):
                if time.monotonic() > deadline:
                    break
                if targets is not None:
                    live.move_to(targets[k])
                else:
                    print(f"  pose {k + 1}/{args.poses}: move the arm so the camera sees the board, then hold still")
                    if not live.wait_still(deadline, moved_from=cal.views[-1].q if cal.views else None):
                        break
                q, image = live.still_view(spec.name)
                print(f"  pose {k + 1}: {cal.add(q, image).message}")
        except KeyboardInterrupt:
            print("  stopped collecting")
        finally:
            if targets is not None:
                live.move_to(center)
        try:
            result = cal.calibrate()
        except CalibrationError as e:
            return _fail(e)
        out = args.out or handeye_path(profile.name, spec.name)
        result.save(out)
        print(f"== {result.summary()}\n== wrote {out}")
        live.publish_transform(result, args.hold)
    return 0


# -- tactile --------------------------------------------------------------------------------------
def run_tactile(args) -> int:
    from robot_rl.calibration.tactile import record_frames, scale_from_reference
    from robot_rl.drivers.tactile import Calibration, TactileError

    profile = load_profile(args.profile)
    spec = next((t for t in profile.tactile if t.name == args.sensor), None)
    if spec is None:
        raise ConfigError(f"no tactile sensor {args.sensor!r} (sensors: {', '.join(t.name for t in profile.tactile)})",
                          "tactile", profile.source)
    port = args.port or spec.port
    if not port:
        return _fail(CalibrationError(f"tactile sensor {spec.name!r} has no serial port (the sim's taxels already "
                                      "read newtons); set tactile[].port or pass --port"))
    path = args.out or Calibration.path_for(profile.name, spec.name)
    try:
        print(f"== tactile {spec.name} on {port}: recording the zero for {args.seconds:g} s, do not touch the pad ...")
        base = record_frames(port, spec.baud, spec.rows, spec.cols, args.seconds)
        if not args.yes:
            input(f"place the {args.load_newtons:g} N reference load on the pad, then press Enter ")
        print(f"recording under load for {args.seconds:g} s ...")
        loaded = record_frames(port, spec.baud, spec.rows, spec.cols, args.seconds)
        cal = scale_from_reference(base, loaded, args.load_newtons, args.per_taxel,
                                   Calibration.load_or_default(path, spec.rows, spec.cols), port=port,
                                   profile=profile.name)
    except (CalibrationError, TactileError) as e:
        return _fail(e)
    cal.save(path, spec.name)
    notes = cal.meta["notes"]
    print(f"== wrote {path}: scale {float(np.max(cal.scale)):.3g} N/count, dead taxels {notes['dead_taxels'] or 'none'}"
          f", noisy taxels {notes['noisy_taxels'] or 'none'}; the tactile node uses it from its next start")
    return 0


# -- time offsets ---------------------------------------------------------------------------------
def run_time_offset(args) -> int:
    from robot_rl.calibration.time_offset import (
        estimate_camera_latency, estimate_signal_latency, wiggle_schedule, write_time_offsets,
    )

    profile = load_profile(args.profile)
    names = profile.robot.joint_names
    arm = [i for i, n in enumerate(names) if n != profile.robot.gripper_joint]
    moving = {arm[-1]: args.amplitude * 1.5, arm[-2]: args.amplitude, arm[-3]: args.amplitude * 0.5}
    overrides = None
    if args.camera_delay_s is not None:
        sim = next((n for n in profile.nodes if n.executable == "sim_robot_node"), None)
        if sim is None or not args.up:
            return _fail(CalibrationError("--camera-delay-s needs a sim profile and --up"))
        overrides = {sim.name: {"camera_delay_s": str(args.camera_delay_s)}}
    with Live(profile, args.up, overrides) as live:
        live.watch_joints()
        for cam in profile.cameras:
            live.watch_camera(cam.name, keep=100000, side=64)
        for tac in profile.tactile:
            live.watch_tactile(tac.name)
        problem = live.wait_joints(30.0, commands=True)
        if problem:
            return _fail(CalibrationError(f"{problem}: start the setup (robot-rl up {profile.name}) or pass --up"))
        center = live.joints()
        lower = [j.lower for j in profile.robot.joints]
        upper = [j.upper for j in profile.robot.joints]
        plan = wiggle_schedule(center, lower, upper, moving, args.seconds, profile.robot.control_rate_hz)
        if args.squeeze and profile.robot.gripper_joint:
            g = names.index(profile.robot.gripper_joint)
            squeeze = wiggle_schedule(center, lower, upper, {g: upper[g] - lower[g]}, args.seconds,
                                      profile.robot.control_rate_hz, seed=1)
            plan = np.concatenate([plan, squeeze])
        print(f"== time offsets of {profile.name}: wiggling {', '.join(names[i] for i in moving)} for "
              f"{len(plan) / profile.robot.control_rate_hz:.0f} s (keep the workspace still) ...")
        live.play(plan)
        live.move_to(center)
        js, q, effort = live.joint_history()
    estimates = []
    for cam in profile.cameras:
        stamps, frames = live.frame_history(cam.name)
        try:
            estimates.append(estimate_camera_latency(f"camera/{cam.name}", js, q, stamps, frames,
                                                     max_lag_s=args.max_lag))
        except CalibrationError as e:
            print(f"  camera/{cam.name}: skipped: {e}")
    for tac in profile.tactile if args.squeeze else []:
        stamps, totals = live.frame_history(f"tactile/{tac.name}")
        g = names.index(profile.robot.gripper_joint)
        ref = np.abs(effort[:, g]) if effort.size else -q[:, g]  # squeeze force, or closing as a stand-in
        try:
            estimates.append(estimate_signal_latency(f"tactile/{tac.name}", js, ref, stamps, totals,
                                                     max_lag_s=args.max_lag))
        except (CalibrationError, ValueError) as e:
            print(f"  tactile/{tac.name}: skipped: {e}")
    for e in estimates:
        print(f"  {e.summary()}")
    if not estimates:
        return _fail(CalibrationError("no stream could be matched to the joint motion"))
    out = write_time_offsets(profile.name, estimates, args.out)
    print(f"== wrote {out}; the recorder/policy apply it through time_offset.stamp_corrections(profile)")
    return 0


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

        pub = self.node.create_publisher(TransformStamped, f"/calibration/hand_eye/{result.camera}", self.qos.LATCHED)
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
