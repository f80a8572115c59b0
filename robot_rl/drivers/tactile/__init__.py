"""Serial taxel sensors without ROS: wire protocol, clock mapping, calibration, driver, pty emulator.

See hardware/tactile/PROTOCOL.md for the wire format and hardware/tactile/README.md for bring-up.
"""
from robot_rl.drivers.tactile.calibration import Calibration
from robot_rl.drivers.tactile.clock import ClockSync
from robot_rl.drivers.tactile.protocol import Frame, FrameParser, ParserStats, encode_command, encode_frame
from robot_rl.drivers.tactile.serial_driver import SerialTactileDriver, TactileError, TactileSample

__all__ = ["Calibration", "ClockSync", "Frame", "FrameParser", "ParserStats", "SerialTactileDriver", "TactileError",
           "TactileSample", "encode_command", "encode_frame", "record_baseline"]


def __getattr__(name: str):
    # lazy, so `python -m robot_rl.drivers.tactile.calibrate` does not import its module twice
    if name == "record_baseline":
        from robot_rl.drivers.tactile.calibrate import record_baseline

        return record_baseline
    raise AttributeError(name)
