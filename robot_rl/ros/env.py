"""Process environment every entry point applies before rclpy.init (no rclpy import here)."""
from __future__ import annotations

import os
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).with_name("fastdds.xml")


def configure_ros_environment(env: dict | None = None) -> dict:
    """Point Fast DDS at the project's XML profile (unless the user chose one) and pick Fast DDS.

    Works on `os.environ` by default, or on a dict meant for a child process.
    """
    env = os.environ if env is None else env
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # Fast DDS otherwise also reads ./DEFAULT_FASTRTPS_PROFILES.xml from the working directory.
    env.setdefault("SKIP_DEFAULT_XML", "1")
    return env
