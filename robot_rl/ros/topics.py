"""Every topic and service name of DESIGN.md §3, in one place."""
from __future__ import annotations

JOINT_STATES = "/robot/joint_states"
ROBOT_STATE = "/robot/state"  # low-dim state vector (JointState: name = profile.state_names), e.g. a gym observation
ROBOT_COMMAND = "/robot/command"
TELEOP_COMMAND = "/teleop/command"
TELEOP_INTERVENING = "/teleop/intervening"
POLICY_BASE_ACTION = "/policy/base_action"
POLICY_RESIDUAL = "/policy/residual"
POLICY_CHUNK_PHASE = "/policy/chunk_phase"  # JointState, name ["chunk_phase"]: the action's index in the base chunk
LEARNER_WEIGHTS = "/learner/residual_weights"
EPISODE_EVENTS = "/episode/events"
RECORDER_RECORDING = "/recorder/recording"  # std_msgs/Bool, latched: whether an episode is being recorded
DIAGNOSTICS = "/diagnostics"
SIM_TASK_STATE = "/sim/task_state"  # privileged sim state (JSON) for the scripted expert and evaluation
CLOCK = "/clock"

# Services (std_srvs)
RECORDER_START = "/recorder/start"
RECORDER_STOP = "/recorder/stop"
RECORDER_DISCARD = "/recorder/discard"
RECORDER_LABEL_SUCCESS = "/recorder/label_success"
ROBOT_RESET = "/robot/reset"
ROBOT_ESTOP = "/robot/estop"
POLICY_ENABLE = "/policy/enable"
EPISODE_MANAGER_CONTINUE = "/episode_manager/continue"  # operator: the scene is reset, go on
EPISODE_MANAGER_STOP = "/episode_manager/stop_episode"  # operator: end this episode now
EPISODE_MANAGER_LABEL = "/episode_manager/label"  # operator: success (true) / failure (false)


def camera_color(name: str) -> str:
    return f"/cameras/{name}/color/image_raw"


def camera_depth(name: str) -> str:
    return f"/cameras/{name}/depth/image_raw"


def camera_info(name: str) -> str:
    return f"/cameras/{name}/color/camera_info"


def tactile_image(name: str) -> str:
    return f"/tactile/{name}/image"


def hand_eye(camera: str) -> str:
    """A camera's hand-eye result (geometry_msgs/TransformStamped, latched; tf2 is not available here)."""
    return f"/calibration/hand_eye/{camera}"
