"""Baseline (zero) calibration of a taxel sensor: average a few seconds with nothing touching the pad.

  python -m robot_rl.drivers.tactile.calibrate --profile P --sensor NAME --seconds 2

writes calibration/<profile name>/<sensor>.yaml (ROBOT_RL_CALIBRATION_DIR overrides the folder),
keeping the scale/units of an existing file so a force calibration survives re-zeroing.
Stop the tactile node first: the driver opens the port exclusively.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from robot_rl.config import ConfigError, load_profile
from robot_rl.drivers.tactile.calibration import Calibration, baseline_from_frames
from robot_rl.drivers.tactile.serial_driver import SerialTactileDriver, TactileError, TactileSample

NOISE_WARN_COUNTS = 10.0  # more spread than ADC noise during the recording: probably touched


def record_baseline(port: str, baud: int, rows: int, cols: int, seconds: float = 2.0,
                    timeout_s: float = 10.0, previous: Calibration | None = None) -> Calibration:
    """Record `seconds` of frames from the sensor on `port` and return the zero calibration.

    Raises TactileError with the driver's diagnosis (missing port, no valid frames, ...) when no
    frames arrive within `timeout_s`.
    """
    driver = SerialTactileDriver(port, baud, rows, cols, retry_max_s=1.0,
                                 no_frames_timeout_s=min(2.0, timeout_s / 2), on_log=lambda level, msg: None)
    frames: list[np.ndarray] = []
    first: list[float] = []
    done = threading.Event()

    def on_sample(sample: TactileSample) -> None:
        if not first:
            first.append(time.monotonic())
        if time.monotonic() - first[0] >= seconds:
            done.set()
        elif not done.is_set():
            frames.append(sample.raw)

    thread = threading.Thread(target=driver.run, args=(on_sample, done.is_set), name="tactile-baseline", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(0.05):
        if not first and time.monotonic() > deadline:
            done.set()
            thread.join(timeout=5.0)
            raise TactileError(driver.last_error or f"no valid frames from {port} at {baud} baud within {timeout_s:.0f} s; "
                               "check the baud rate and that the sensor firmware is running")
    thread.join(timeout=5.0)
    if not frames:
        raise TactileError(f"no frames recorded from {port}")
    return baseline_from_frames(np.stack(frames), previous, port=port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record a taxel sensor's zero (nothing touching it).")
    parser.add_argument("--profile", default="sim", help="profile name or YAML path")
    parser.add_argument("--sensor", required=True, help="tactile sensor name in the profile")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="give up when no frame came within this")
    parser.add_argument("--port", default="", help="override the profile's port")
    parser.add_argument("--output", default="", help="override the output file")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        spec = next((t for t in profile.tactile if t.name == args.sensor), None)
        if spec is None:
            known = ", ".join(t.name for t in profile.tactile) or "none"
            raise ConfigError(f"no tactile sensor {args.sensor!r} (sensors: {known})", "tactile", profile.source)
        port = args.port or spec.port
        if not port:
            raise ConfigError(f"tactile sensor {spec.name!r} has no port", "tactile.port", profile.source)
        path = args.output or Calibration.path_for(profile.name, spec.name)
        previous = Calibration.load_or_default(path, spec.rows, spec.cols)
        print(f"recording the zero of {spec.name} ({spec.rows}x{spec.cols}) on {port} for {args.seconds:g} s; "
              "do not touch the sensor ...", flush=True)
        cal = record_baseline(port, spec.baud, spec.rows, spec.cols, args.seconds, args.timeout, previous)
        cal.meta["profile"] = profile.name
    except (ConfigError, TactileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = cal.save(path, spec.name)
    print(f"wrote {written}: {cal.meta['frames']} frames, baseline {cal.baseline.min():.0f}..{cal.baseline.max():.0f} "
          f"counts (mean {cal.baseline.mean():.1f}), noise {cal.meta['noise_std']:.2f} counts, units {cal.units}")
    if cal.meta["noise_std"] > NOISE_WARN_COUNTS:
        print("warning: the readings moved a lot during the recording; was the sensor touched? re-run if so",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
