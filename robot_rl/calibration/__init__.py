"""Calibration without ROS: ChArUco boards (board), camera intrinsics (intrinsics, camera_file),
forward kinematics (kinematics) and hand-eye (handeye), tactile scale and taxel health (tactile),
stream latencies and stamp corrections (time_offset), and a sim scene with a board for ground truth
(simboard). The `robot-rl calibrate` command (robot_rl/cli/calibrate.py) collects the data over ROS."""
