"""Intel RealSense cameras without ROS: open by serial (or a .db3 recording), color + aligned depth in mm,
capture stamps, drop counting, retry on loss, calibration-file intrinsics.

Import order matters in a process that also uses ROS 2: the pyrealsense2 wheel statically links its
own Fast DDS 2.x and exports its singletons as GNU-unique symbols, which the dynamic linker shares
process-wide with ROS's libfastdds 3.x. Whichever loads first owns them; if pyrealsense2 comes
first, ROS's Fast DDS builds its objects in pyrealsense2's storage and the process segfaults (at
exit, or earlier). So `import rclpy` before anything that imports this package (camera_node and
the tests do); pure-driver processes without ROS are unaffected.
"""
from robot_rl.drivers.realsense.calibration import CameraCalibration, calibration_path, load_calibration
from robot_rl.drivers.realsense.camera import RealSenseCamera, backoff_delays
from robot_rl.drivers.realsense.device import (
    CameraError, DeviceInfo, DeviceNotFound, Session, find_device, list_devices, open_session,
)
from robot_rl.drivers.realsense.frames import CameraFrame, FrameConverter, Intrinsics, StampClock

__all__ = [
    "CameraCalibration", "CameraError", "CameraFrame", "DeviceInfo", "DeviceNotFound", "FrameConverter",
    "Intrinsics", "RealSenseCamera", "Session", "StampClock", "backoff_delays", "calibration_path",
    "find_device", "list_devices", "load_calibration", "open_session",
]
