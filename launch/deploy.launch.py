"""ros2 launch robot_rl deploy.launch.py [profile:=sim] — the policy on the robot.

Thin on purpose: the profile (hardware/profiles/NAME.yaml) says which nodes run in mode 'deploy' and
with which parameters; `robot-rl up NAME --mode deploy` starts the same graph without the launch CLI.
"""
from robot_rl.ros.launch_support import profile_launch_description


def generate_launch_description():
    return profile_launch_description(mode="deploy")
