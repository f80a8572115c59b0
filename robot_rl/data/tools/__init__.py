"""Offline tools over a store (no ROS): info, check/repair reports, plots, videos, LeRobot export,
merge. `robot-rl store …` (robot_rl/cli/store.py) is a thin shell over these modules; heavy
imports (matplotlib, cv2, pyarrow) happen inside the module that needs them.
"""
