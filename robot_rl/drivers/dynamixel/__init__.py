"""Dynamixel X-series arms over Protocol 2.0 (no ROS): bus driver, follower-arm loop, servo-chain emulator."""
