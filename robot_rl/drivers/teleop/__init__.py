"""Teleoperation devices behind one interface (base.TeleopDevice)."""
from robot_rl.drivers.teleop.base import DeviceError, TeleopDevice, TeleopInput

__all__ = ["DeviceError", "TeleopDevice", "TeleopInput"]
