"""SimRobot core: model from the profile, reproducible resets, control, cameras, taxels, success."""
import copy
import json


import numpy as np
import pytest

from robot_rl.sim import SimRobot
from robot_rl.sim.ik import ArmIK, quat_yaw
from robot_rl.sim.scene import CUBE_HALF


@pytest.fixture(scope="module")
def robot(profile):
    r = SimRobot(profile, seed=0, render=True)
    yield r
    r.close()


def settle(robot, seconds):
    robot.step_physics(int(round(seconds / robot.physics_dt)))


def test_model_follows_profile(robot, profile):
    assert robot.joint_names == profile.robot.joint_names
    assert robot.joint_names == ["waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
    assert robot.physics_dt == pytest.approx(profile.sim.physics_dt)
    assert robot.control_dt == pytest.approx(1.0 / profile.robot.control_rate_hz)
    n_taxels = sum(t.rows * t.cols for t in profile.tactile)
    assert robot.model.nsensor == n_taxels
    for j in profile.robot.joints:
        lo, hi = robot.model.joint(j.name).range
        assert (lo, hi) == pytest.approx((j.lower, j.upper))


def test_sizes_come_from_the_profile(profile):
    p = copy.deepcopy(profile)
    p.cameras[1].width, p.cameras[1].height = 96, 64
    p.tactile[0].rows, p.tactile[0].cols = 3, 5
    with SimRobot(p, render=True) as r:
        rgb, depth = r.render("wrist")
        assert rgb.shape == (64, 96, 3) and depth.shape == (64, 96)
        assert r.tactile("left_finger").shape == (3, 5)
        assert r.tactile("right_finger").shape == (profile.tactile[1].rows, profile.tactile[1].cols)


def test_reset_reproduces_layout_and_keeps_time_monotonic(robot):
    robot.reset(5)
    a = robot.task_state()
    settle(robot, 0.2)
    t = robot.time
    robot.reset(6)
    b = robot.task_state()
    assert robot.time == pytest.approx(t)  # reset does not rewind the clock
    robot.reset(5)
    c = robot.task_state()
    assert a == c
    assert a["cube_pos"] != b["cube_pos"] and a["target_pos"] != b["target_pos"]
    assert json.loads(json.dumps(a)) == a  # JSON-serialisable
    assert np.hypot(*np.subtract(a["cube_pos"][:2], a["target_pos"][:2])) >= 0.08
    q, v, _ = robot.joint_state()
    assert q == pytest.approx([j.home for j in robot.profile.robot.joints], abs=1e-9)
    assert np.all(v == 0)
    robot.reset()  # seed None: a fresh layout from the internal generator
    assert robot.task_state()["cube_pos"] != c["cube_pos"]


def test_joint_target_is_tracked(robot):
    robot.reset(0)
    q0 = robot.joint_state()[0]
    goal = q0 + np.array([0.5, 0.3, -0.3, -0.2, 0.4, -0.02])
    robot.set_target(goal)
    settle(robot, 0.15)
    q_mid = robot.joint_state()[0]
    assert np.all(np.abs(goal - q_mid) < np.abs(goal - q0))  # moving toward it
    settle(robot, 1.0)
    q, v, effort = robot.joint_state()
    assert q == pytest.approx(goal, abs=0.01)
    assert np.abs(v).max() < 0.05
    assert q.dtype == v.dtype == effort.dtype == np.float64 and q.shape == (6,)
    with pytest.raises(ValueError, match="6 values"):
        robot.set_target(np.zeros(5))


def test_render_shapes_depth_and_motion(robot, profile):
    robot.reset(1)
    before = {}
    for cam in profile.cameras:
        rgb, depth = robot.render(cam.name)
        assert rgb.shape == (cam.height, cam.width, 3) and rgb.dtype == np.uint8
        assert depth.shape == (cam.height, cam.width) and depth.dtype == np.uint16
        valid = depth[depth > 0]
        assert valid.size > 0.5 * depth.size
        assert 30 <= np.median(valid) <= 2000, f"{cam.name}: median depth {np.median(valid)} mm"
        assert rgb.std() > 5  # not a blank frame
        before[cam.name] = rgb
    robot.set_target(robot.joint_state()[0] + [0.6, 0.3, 0.0, 0.0, 0.5, 0.0])
    settle(robot, 1.0)
    for cam in profile.cameras:
        rgb, _ = robot.render(cam.name)
        assert np.abs(rgb.astype(int) - before[cam.name]).mean() > 1.0, f"{cam.name} did not change"


@pytest.mark.parametrize("camera", ["front", "wrist"])
def test_intrinsics_match_depth_geometry(robot, profile, camera):
    """Unprojecting the depth image with the intrinsics puts the table at z = 0 in the world."""
    robot.reset(2)
    spec = {c.name: c for c in profile.cameras}[camera]
    fx, fy, cx, cy = robot.camera_intrinsics(camera)
    assert fx == pytest.approx(fy)
    assert (cx, cy) == pytest.approx(((spec.width - 1) / 2, (spec.height - 1) / 2))
    _, depth = robot.render(camera)
    cam = robot.model.camera(camera).id
    pos, rot = robot.data.cam_xpos[cam], robot.data.cam_xmat[cam].reshape(3, 3)
    v, u = np.nonzero(depth > 0)
    z = depth[v, u] / 1000.0
    # MuJoCo camera frame: x right, y up, looking along -z; image rows grow downward
    pts = np.stack([(u - cx) / fx * z, -(v - cy) / fy * z, -z], axis=1) @ rot.T + pos
    on_table = np.abs(pts[:, 2]) < 0.005
    assert on_table.mean() > 0.4, f"{camera}: only {on_table.mean():.0%} of pixels land on the table plane"
    assert np.median(np.abs(pts[on_table, 2])) < 0.002


def test_unknown_names_and_no_render(profile, robot):
    with pytest.raises(KeyError, match="'top'"):
        robot.render("top")
    with pytest.raises(KeyError, match="'palm'"):
        robot.tactile("palm")
    with pytest.raises(KeyError, match="'side'"):
        robot.camera_intrinsics("side")
    headless = SimRobot(profile, render=False)
    with pytest.raises(RuntimeError, match="render=False"):
        headless.render("front")
    assert headless.camera_intrinsics("front") == robot.camera_intrinsics("front")


def grasp_cube(robot):
    """Put the open gripper around the cube (IK teleport), then close it."""
    ik = ArmIK(robot.model)
    ts = robot.task_state()
    q = ik.solve(np.add(ts["cube_pos"], [0, 0, 0.004]), yaw=quat_yaw(ts["cube_quat"]))
    robot.set_joint_positions(np.r_[q, 0.04])
    settle(robot, 0.1)
    open_taxels = (robot.tactile("left_finger").copy(), robot.tactile("right_finger").copy())
    robot.set_target(np.r_[q, 0.0])
    settle(robot, 0.6)
    return q, open_taxels


def test_tactile_zero_in_free_space_and_positive_on_grasp(robot, profile):
    robot.reset(3)
    settle(robot, 0.2)
    for t in profile.tactile:
        img = robot.tactile(t.name)
        assert img.shape == (t.rows, t.cols) and img.dtype == np.float32
        assert np.abs(img).max() < 1e-6  # open gripper in free space
    q, (left_open, right_open) = grasp_cube(robot)
    assert left_open.max() < 1e-6 and right_open.max() < 1e-6  # fingers around, not touching
    left, right = robot.tactile("left_finger"), robot.tactile("right_finger")
    assert left.sum() > 1.0 and right.sum() > 1.0, (left, right)  # newtons
    assert (left > 0.01).sum() >= 4 and (right > 0.01).sum() >= 4  # an image, not a single point
    assert robot.task_state()["grasped"]
    assert robot.joint_state()[0][5] == pytest.approx(CUBE_HALF, abs=0.003)  # fingers stopped by the cube


def test_success_only_when_cube_rests_on_target_released(robot):
    robot.reset(4)
    assert not robot.success() and not robot.task_state()["success"]
    target = robot.task_state()["target_pos"]
    robot.task.set_cube(robot.data, [target[0] + 0.01, target[1] - 0.005, CUBE_HALF + 0.001], yaw=0.3)
    settle(robot, 0.5)
    assert robot.success() and robot.task_state()["success"]
    robot.task.set_cube(robot.data, [target[0] + 0.04, target[1], CUBE_HALF + 0.001])
    settle(robot, 0.5)
    assert not robot.success()  # 4 cm off
    robot.task.set_cube(robot.data, [target[0], target[1], 0.10])
    settle(robot, 0.05)
    assert not robot.success()  # falling through the air above the target
    # held between the fingers on the target: not released, so not a success
    robot.reset(4)
    robot.task.set_cube(robot.data, [target[0], target[1], CUBE_HALF], yaw=0.0)
    grasp_cube(robot)
    assert robot.task_state()["grasped"] and not robot.success()


def test_drifted_joint_settles_off_its_target_and_reports_where_it_is(profile):
    """The robot-changed-since-the-demos rehearsal: the waist misses every target by the drift."""
    with SimRobot(profile, seed=0, render=False, drift={"waist": 0.05}) as drifted:
        drifted.reset(0)
        goal = drifted.joint_state()[0] + np.array([0.4, 0.2, -0.2, -0.1, 0.3, -0.01])
        drifted.set_target(goal)
        settle(drifted, 1.0)
        q = drifted.joint_state()[0]
        assert q[0] == pytest.approx(goal[0] + 0.05, abs=0.01)
        assert q[1:] == pytest.approx(goal[1:], abs=0.01)
    with pytest.raises(ValueError, match="unknown joints"):
        SimRobot(profile, render=False, drift={"hip": 0.1})


def test_parse_drift_names_the_bad_item(profile):
    from robot_rl.sim.robot import parse_drift

    joints = list(profile.robot.joint_names)
    assert parse_drift("", joints) == {} and parse_drift("none", joints) == {}
    assert parse_drift("waist=0.05, shoulder=-0.02", joints) == {"waist": 0.05, "shoulder": -0.02}
    for text, problem in (("hip=0.1", "one of waist"), ("waist", "JOINT=OFFSET"), ("waist=abc", "not a number"),
                          ("waist=0.9", "at most 0.5"), ("waist=nan", "finite")):
        with pytest.raises(ValueError, match=problem) as err:
            parse_drift(f"elbow=0.01,{text}", joints)
        assert text in str(err.value)


def test_sim_driver_takes_drift_from_its_node_parameter(profile):
    from robot_rl.config import ConfigError
    from robot_rl.config.nodes import SimRobotParams
    from robot_rl.sim.driver import SimDriver

    driver = SimDriver(profile, SimRobotParams(render=False, drift="waist=-0.03"))
    try:
        assert driver.robot.drift == {"waist": -0.03}
    finally:
        driver.close()
    with pytest.raises(ConfigError, match="drift.*hip=1"):
        SimDriver(profile, SimRobotParams(render=False, drift="hip=1"))
