"""ROS 2 plumbing: with robot_rl.nodes, the only code that imports rclpy.

pyrealsense2 statically links an older Fast DDS whose process-wide symbols clash with ROS's; if it is
loaded first, the process segfaults once ROS starts (robot_rl/drivers/realsense/__init__.py). That is
caught here, as an error that says what to do, instead of a crash at exit.
"""
import sys


def _check_import_order() -> None:
    loaded = list(sys.modules)  # insertion order = the order imports began
    if "pyrealsense2" in sys.modules and ("rclpy" not in sys.modules
                                          or loaded.index("pyrealsense2") < loaded.index("rclpy")):
        raise ImportError(
            "pyrealsense2 was imported before rclpy in this process, which makes it segfault once ROS starts "
            "(both carry a Fast DDS; see robot_rl/drivers/realsense/__init__.py). Put `import rclpy` first, "
            "before pyrealsense2 or robot_rl.drivers.realsense.")


_check_import_order()
