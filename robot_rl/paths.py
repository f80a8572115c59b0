"""Where the package's data folders live: the source tree (pip -e) or share/robot_rl (colcon)."""
from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """Root holding launch/, hardware/, calibration/ for this installation."""
    if (SOURCE_ROOT / "hardware").is_dir():
        return SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("robot_rl"))
    except Exception:  # noqa: BLE001 - any lookup failure means "not installed with colcon"
        return SOURCE_ROOT


def profile_dirs() -> list[Path]:
    """Profile search path: $ROBOT_RL_PROFILE_PATH (colon-separated) first, then the package's."""
    extra = [Path(p) for p in os.environ.get("ROBOT_RL_PROFILE_PATH", "").split(":") if p]
    return [*extra, share_dir() / "hardware" / "profiles"]


def calibration_dir() -> Path:
    return Path(os.environ.get("ROBOT_RL_CALIBRATION_DIR", share_dir() / "calibration"))
