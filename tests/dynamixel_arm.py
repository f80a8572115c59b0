"""The emulated 6-servo arm the Dynamixel tests share: joints and their servo ids."""

IDS = [1, 2, 3, 4, 5, 6]
JOINTS = [
    {"name": "waist", "lower": -2.0, "upper": 2.0, "max_velocity": 1.0},
    {"name": "shoulder", "lower": -1.5, "upper": 1.5, "max_velocity": 1.5},
    {"name": "elbow", "lower": -1.5, "upper": 1.5, "max_velocity": 1.5},
    {"name": "wrist_pitch", "lower": -1.5, "upper": 1.5, "max_velocity": 2.0},
    {"name": "wrist_roll", "lower": -2.5, "upper": 2.5, "max_velocity": 2.0},
    {"name": "gripper", "lower": 0.0, "upper": 0.04, "max_velocity": 0.1, "home": 0.04},
]
