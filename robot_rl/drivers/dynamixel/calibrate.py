"""Read an arm's servos and suggest profile offsets: the tool behind hardware/README.md's calibration.

    python -m robot_rl.drivers.dynamixel.calibrate PROFILE --arm follower            # watch ticks/joints
    python -m robot_rl.drivers.dynamixel.calibrate PROFILE --arm follower --zero     # suggest offsets

`--zero`: hold the arm in the profile's zero pose (every revolute joint at 0 rad) and it prints, per
servo, the offset that makes the current pose read 0 with the profile's direction. Torque is only
disabled with --torque-off (support the follower arm first: it falls when limp).
"""
from __future__ import annotations

import argparse
import sys
import time

from robot_rl.config import ConfigError, load_profile
from robot_rl.drivers.dynamixel import protocol as p
from robot_rl.drivers.dynamixel.bus import BusError, DynamixelBus
from robot_rl.drivers.dynamixel.mapping import RAD_PER_TICK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--arm", choices=["follower", "leader"], default="follower")
    ap.add_argument("--zero", action="store_true", help="suggest offsets for the pose the arm is in now")
    ap.add_argument("--torque-off", action="store_true", help="disable torque first so the arm can be moved by hand")
    ap.add_argument("--seconds", type=float, default=0.0, help="keep printing for this long (0 = once)")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        spec = getattr(profile, args.arm)
        if spec is None:
            raise ConfigError(f"profile has no '{args.arm}:' bus section", args.arm, profile.source)
        bus = DynamixelBus(spec, profile.robot, args.arm)
        bus.open()
    except (ConfigError, BusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.torque_off:
            bus.set_torque(False)
        end = time.monotonic() + args.seconds
        while True:
            ticks = [int(t) for t in bus.read_ticks()]
            joints = bus.map.to_joint(ticks)
            for k, (i, name, t, q) in enumerate(zip(bus.ids, bus.map.joints, ticks, joints)):
                angle = (t - p.CENTER_TICK) * RAD_PER_TICK
                line = f"id {i:3d} {name:16s} tick {t:6d}  servo angle {angle:+.4f} rad  joint {q:+.4f}"
                servo = bus.map.servos[k]
                if args.zero and not servo.servo_range:
                    line += f"  -> offset: {-servo.direction * angle:+.4f}"
                elif args.zero:
                    line += "  (gripper: note the servo angle fully closed and fully open -> servo_range)"
                print(line)
            if time.monotonic() >= end:
                break
            print()
            time.sleep(0.5)
        print(f"models: { {i: p.MODELS.get(m, m) for i, m in bus.models.items()} }; joint limits "
              f"{[(j.name, j.lower, j.upper) for j in profile.robot.joints]}")
        return 0
    except BusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        bus.close()


if __name__ == "__main__":
    raise SystemExit(main())
