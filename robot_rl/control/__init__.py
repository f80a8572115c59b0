"""The control loop's cores (no ROS): observation history and action-chunk execution."""
