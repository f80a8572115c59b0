"""Camera intrinsics against the simulator's ground truth: a ChArUco board rendered in the MuJoCo scene,
seen by the front and wrist cameras (rendered at 640x480: the profile's 128x128 is too small for
reliable ChArUco detection), must give the sim's pinhole model back. Degenerate collections fail
with advice and write nothing."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robot_rl.calibration.board import Board, load_board  # noqa: E402
from robot_rl.calibration.camera_file import load_camera_file  # noqa: E402
from robot_rl.calibration.files import CalibrationError  # noqa: E402
from robot_rl.calibration.intrinsics import IntrinsicsCalibrator  # noqa: E402
from robot_rl.calibration.simboard import SimBoardScene, board_facing_camera  # noqa: E402
from robot_rl.cli.main import main  # noqa: E402
from robot_rl.config import load_profile  # noqa: E402
from robot_rl.sim.render import pinhole  # noqa: E402

pytestmark = pytest.mark.timeout(120)
PROFILE = load_profile("sim")
SPEC = load_board("charuco_5x7")
BOARD = Board(SPEC)
DISTANCE = {"front": (0.3, 0.5), "wrist": (0.22, 0.35)}
ARM_UP = [0.0, -0.3, 0.0, 0.0, 0.0, 0.04]  # wrist camera looking forward above the table


@pytest.fixture(scope="module")
def scene():
    with SimBoardScene(PROFILE, SPEC, (640, 480)) as s:
        s.set_joints(ARM_UP)
        s.hide_robot()  # intrinsics need only the board; the fingers would cover the wrist view
        yield s


def board_views(scene, camera, n, seed=0, tilt=(15, 45), roll=30):
    """n rendered views of the board at random image positions, distances and tilts."""
    rng = np.random.default_rng(seed)
    K = scene.camera_matrix(camera)
    w, h = scene.size
    for _ in range(n):
        pixel = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
        t = [rng.choice([-1, 1]) * rng.uniform(*tilt) for _ in range(2)]
        T = board_facing_camera(K, SPEC, pixel, rng.uniform(*DISTANCE[camera]), t, rng.uniform(-roll, roll))
        scene.place_board_in_camera(camera, T)
        yield scene.render(camera)


@pytest.mark.parametrize("camera", ["front", "wrist"])
def test_recovers_the_sim_camera_model(scene, camera):
    cal = IntrinsicsCalibrator(BOARD, scene.size)
    for image in board_views(scene, camera, 60, seed=1):
        cal.add_view(image)
        if len(cal.views) >= 20:
            break
    assert cal.ready, cal.hints()
    result = cal.calibrate()
    fx, fy, cx, cy = pinhole(float(scene.model.camera(camera).fovy[0]), *scene.size)
    got = result.fx_fy_cx_cy
    print(f"\n{camera}: {result.summary()}; truth fx=fy={fx:.2f} cx={cx} cy={cy}; errors fx {100 * (got[0] / fx - 1):+.3f} % "
          f"fy {100 * (got[1] / fy - 1):+.3f} % cx {got[2] - cx:+.2f} px cy {got[3] - cy:+.2f} px")
    assert got[0] == pytest.approx(fx, rel=0.01) and got[1] == pytest.approx(fy, rel=0.01)
    assert abs(got[2] - cx) < 2.0 and abs(got[3] - cy) < 2.0
    assert result.rms < 0.5 and np.all(np.abs(result.distortion) < 0.05)


def test_views_need_enough_corners_and_a_new_pose(scene):
    cal = IntrinsicsCalibrator(BOARD, scene.size)
    assert len(cal.hints()) == 3 and not cal.ready  # views, regions, tilts all missing
    blank = np.full((480, 640, 3), 200, np.uint8)
    assert "board not detected" in cal.add_view(blank).message
    assert "expected 640x480" in cal.add_view(blank[:100]).message
    K = scene.camera_matrix("front")
    scene.place_board_in_camera("front", board_facing_camera(K, SPEC, (320, 240), 0.4, (25, 0)))
    image = scene.render("front")
    first = cal.add_view(image)
    assert first.accepted and first.corners == SPEC.n_corners
    again = cal.add_view(image)
    assert not again.accepted and "same pose as view 1" in again.message and "move or tilt" in again.message
    scene.place_board_in_camera("front", board_facing_camera(K, SPEC, (320, 240), 0.4, (25, 0), 0.5))
    assert not cal.add_view(scene.render("front")).accepted  # half a degree of roll is not a new pose
    scene.place_board_in_camera("front", board_facing_camera(K, SPEC, (0, 240), 0.4, (25, 0)))
    partial = cal.add_view(scene.render("front"))  # mostly outside the image
    assert not partial.accepted and "bring more of the board into view" in partial.message
    cov = cal.coverage()
    assert cov["cells"][1, 1] and not cov["cells"][0, 0] and cov["tilts"]["right"] and not cov["tilts"]["left"]
    assert any("top-left" in h for h in cal.hints()) and any("left" in h and "tilt" in h for h in cal.hints())


def test_degenerate_collections_fail_with_advice(scene):
    few = IntrinsicsCalibrator(BOARD, scene.size)
    for image in board_views(scene, "front", 3, seed=2):
        few.add_view(image)
    with pytest.raises(CalibrationError, match=r"only \d usable views, need at least 8: show the board"):
        few.calibrate()

    flat = IntrinsicsCalibrator(BOARD, scene.size)  # board moved around but never tilted: planes all parallel
    for image in board_views(scene, "front", 30, seed=3, tilt=(0, 0.5), roll=40):
        flat.add_view(image)
    assert len(flat.views) >= 8
    with pytest.raises(CalibrationError, match="same tilt.*tilt the board 20-45 deg"):
        flat.calibrate()


def test_cli_from_image_files_writes_the_profile_resolution(tmp_path, monkeypatch, capsys):
    """Views rendered at 512x512 (the profile's 128x128 aspect) calibrate the 128x128 camera."""
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path / "calib"))
    images = tmp_path / "views"
    images.mkdir()
    with SimBoardScene(PROFILE, SPEC, (512, 512)) as square:
        for i, image in enumerate(board_views(square, "front", 24, seed=4)):
            cv2.imwrite(str(images / f"view_{i:02d}.png"), image[:, :, ::-1])
    assert main(["calibrate", "camera", "--profile", "sim", "--camera", "front", "--images", str(images)]) == 0
    out = capsys.readouterr().out
    assert "scaled to the profile's 128x128" in out and "wrote" in out
    calib = load_camera_file("sim", "front", 128, 128)
    fx, fy, cx, cy = pinhole(55.0, 128, 128)
    got = calib.fx_fy_cx_cy
    assert got[0] == pytest.approx(fx, rel=0.01) and got[1] == pytest.approx(fy, rel=0.01)
    assert abs(got[2] - cx) < 0.5 and abs(got[3] - cy) < 0.5
    assert calib.meta["calibrated_at"] == [512, 512] and calib.meta["views"] >= 8

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        cv2.imwrite(str(blank / f"b{i}.png"), np.full((512, 512, 3), 128, np.uint8))
    (tmp_path / "calib" / "sim" / "front.yaml").unlink()
    assert main(["calibrate", "camera", "--profile", "sim", "--camera", "front", "--images", str(blank)]) == 1
    captured = capsys.readouterr()
    assert "board not detected" in captured.out
    assert "only 0 usable views, need at least 8" in captured.err and "no file written" in captured.err
    assert not (tmp_path / "calib" / "sim" / "front.yaml").exists()
