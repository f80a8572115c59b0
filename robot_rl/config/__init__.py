"""One config system: typed dataclasses loaded from YAML with errors naming file and field."""
from robot_rl.config.profile import (
    CameraSpec,
    JointSpec,
    NodeSpec,
    Profile,
    RobotSpec,
    SafetySpec,
    SimSpec,
    TactileSpec,
    available_profiles,
    load_profile,
    resolve_profile,
)
from robot_rl.config.typed import ConfigError, from_dict, load_file, to_dict

__all__ = [
    "CameraSpec", "ConfigError", "JointSpec", "NodeSpec", "Profile", "RobotSpec", "SafetySpec", "SimSpec",
    "TactileSpec", "available_profiles", "from_dict", "load_file", "load_profile", "resolve_profile", "to_dict",
]
