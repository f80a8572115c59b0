"""robot_rl: a ROS 2 real-robot learning stack (teleop data -> base policy -> residual off-policy RL)."""
__version__ = "0.1.0"
