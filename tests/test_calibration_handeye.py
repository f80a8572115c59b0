"""Hand-eye against the simulator's mounted transforms: the wrist camera in the hand (flange) frame
(eye-in-hand, board on the table) and the front camera in the base frame (eye-to-hand, board held by
the hand). Robot poses come from joint positions through the profile's `kinematics:` FK, never from
MuJoCo, so a wrong chain in sim.yaml fails these tests. Degenerate pose sets fail with advice."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from robot_rl.calibration.board import Board, load_board  # noqa: E402
from robot_rl.calibration.files import CalibrationError  # noqa: E402
from robot_rl.calibration.geometry import inv_T, make_T, pose_error, quat_matrix  # noqa: E402
from robot_rl.calibration.handeye import HandEyeCalibrator, calibration_poses, load_handeye  # noqa: E402
from robot_rl.calibration.kinematics import ChainFK  # noqa: E402
from robot_rl.calibration.simboard import SimBoardScene, board_facing_camera  # noqa: E402
from robot_rl.ros.calibration_session import transform_stamped  # noqa: E402
from robot_rl.config import load_profile  # noqa: E402

pytestmark = pytest.mark.timeout(120)
PROFILE = load_profile("sim")
SPEC = load_board("charuco_5x7")
BOARD = Board(SPEC)
FK = ChainFK.of(PROFILE)
LOOK_DOWN = np.array([0.0, 0.0, 0.0, 1.57, 0.0, 0.04])  # wrist camera sees the table in front of the gripper
REACH = np.array([0.0, 0.35, 0.25, 0.9, 0.0, 0.04])  # hand in the middle of the front camera's image


@pytest.fixture(scope="module")
def scene():
    with SimBoardScene(PROFILE, SPEC, (640, 480)) as s:
        yield s


def eye_in_hand(scene, poses):
    """Board lying face up on the table where the wrist camera looks; views from `poses`."""
    scene.set_board(make_T(np.diag([1.0, -1.0, -1.0]), [0.27 - SPEC.size_m[0] / 2, SPEC.size_m[1] / 2, 0.0005]))
    cal = HandEyeCalibrator(BOARD, scene.camera_matrix("wrist"), None, FK, "hand", "wrist")
    for q in poses:
        scene.set_joints(q)
        cal.add(q, scene.render("wrist"))
    return cal


def eye_to_hand(scene, poses):
    """Board fixed to the hand, facing the front camera at REACH; views from `poses`."""
    scene.set_joints(REACH)
    K, T_world_cam, hand = scene.camera_matrix("front"), scene.camera_pose("front"), scene.body_pose("hand")
    p = K @ (inv_T(T_world_cam) @ np.r_[hand[:3, 3], 1.0])[:3]
    depth = np.linalg.norm(hand[:3, 3] - T_world_cam[:3, 3]) - 0.12  # in front of the gripper
    T_hand_board = inv_T(hand) @ T_world_cam @ board_facing_camera(K, SPEC, (p[0] / p[2], p[1] / p[2]), depth)
    cal = HandEyeCalibrator(BOARD, K, None, FK, "fixed", "front")
    for q in poses:
        scene.set_joints(q)
        scene.set_board(scene.body_pose("hand") @ T_hand_board)
        cal.add(q, scene.render("front"))
    return cal


@pytest.mark.parametrize("mount", ["hand", "fixed"])
def test_recovers_the_mounted_camera(scene, mount, tmp_path):
    center = LOOK_DOWN if mount == "hand" else REACH
    poses = calibration_poses(center, PROFILE.robot.joints, n=16, amplitude=0.25, seed=1, fixed=("gripper",))
    cal = (eye_in_hand if mount == "hand" else eye_to_hand)(scene, poses)
    assert len(cal.views) >= 12, f"board seen in only {len(cal.views)} of 16 poses"
    result = cal.calibrate()
    camera, parent = ("wrist", "hand") if mount == "hand" else ("front", "base")
    truth = scene.camera_in(camera, parent)
    dt, dr = pose_error(result.T_parent_camera, truth)
    print(f"\n{mount}: {result.summary()}\n  error vs sim: {dt * 1e3:.3f} mm, {dr:.4f} deg")
    assert dt < 0.002 and dr < 0.5
    assert result.parent_frame == parent and result.child_frame == f"{camera}_optical_frame"
    assert result.rms_px < 0.5 and result.spread_mm < 2.0

    path = result.save(tmp_path / f"handeye_{camera}.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["mount"] == mount and data["quality"]["views"] == len(cal.views)
    assert data["board_pose"]["frame"] == ("base" if mount == "hand" else "hand")
    frame, child, T = load_handeye(path)
    assert (frame, child) == (parent, f"{camera}_optical_frame") and pose_error(T, result.T_parent_camera)[0] < 1e-6

    msg = transform_stamped(result, 12.5)  # what the CLI publishes
    assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp.sec) == (parent, f"{camera}_optical_frame", 12)
    r = msg.transform.rotation
    T_msg = make_T(quat_matrix([r.x, r.y, r.z, r.w]), [msg.transform.translation.x, msg.transform.translation.y,
                                                        msg.transform.translation.z])
    assert pose_error(T_msg, truth)[0] < 0.002


def test_degenerate_pose_sets_fail_with_advice(scene):
    few = eye_in_hand(scene, calibration_poses(LOOK_DOWN, PROFILE.robot.joints, n=4, seed=2, fixed=("gripper",)))
    with pytest.raises(CalibrationError, match=r"only \d usable views, need at least 8.*rotating the wrist"):
        few.calibrate()

    roll_only = [LOOK_DOWN + np.r_[0, 0, 0, 0, a, 0] for a in np.linspace(-0.6, 0.6, 10)]
    one_axis = eye_in_hand(scene, roll_only)
    assert len(one_axis.views) >= 8
    with pytest.raises(CalibrationError, match="same axis.*rotate about a second axis"):
        one_axis.calibrate()

    shifted = eye_in_hand(scene, [LOOK_DOWN] * 10)
    with pytest.raises(CalibrationError, match="barely rotates.*rotate the wrist"):
        shifted.calibrate()

    scene.set_board(make_T(np.eye(3), [5.0, 5.0, -1.0]))  # board out of every view
    cal = HandEyeCalibrator(BOARD, scene.camera_matrix("wrist"), None, FK, "hand", "wrist")
    scene.set_joints(LOOK_DOWN)
    result = cal.add(LOOK_DOWN, scene.render("wrist"))
    assert not result.accepted and "board not detected" in result.message
    with pytest.raises(CalibrationError, match="board was not found in 1 images"):
        cal.calibrate()


def test_calibration_poses_stay_inside_the_limits():
    joints = PROFILE.robot.joints
    poses = calibration_poses(REACH, joints, n=30, amplitude=3.0, seed=0, fixed=("gripper",))
    lower, upper = np.array([j.lower for j in joints]), np.array([j.upper for j in joints])
    assert all(np.all(q >= lower) and np.all(q <= upper) and q[5] == REACH[5] for q in poses)
    assert len({tuple(np.round(q, 6)) for q in poses}) == 30
