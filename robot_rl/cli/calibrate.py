"""`robot-rl calibrate camera|handeye|tactile|time-offset|board`: collect calibration data from a running
setup (or start it with --up), solve with robot_rl.calibration, write calibration/<setup>/*.yaml.
Nodes load the files on their next start. Nothing is written when a calibration fails; the message
says what to collect instead. See docs/calibration.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from robot_rl.calibration.board import DEFAULT_BOARD, Board, load_board, write_printable
from robot_rl.calibration.files import CalibrationError
from robot_rl.config import ConfigError, load_profile
from robot_rl.ros.calibration_session import Live


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
