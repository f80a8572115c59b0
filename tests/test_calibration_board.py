"""Board definitions (calibration/boards/*.yaml), printable files at a stated DPI, and the optional board
in the sim scene (absent unless asked, so the task scene is unchanged)."""
import re

import numpy as np
import pytest
from PIL import Image

from robot_rl.calibration.board import Board, BoardSpec, board_dirs, load_board, printable, texture_png
from robot_rl.cli.main import main
from robot_rl.config import ConfigError, from_dict, load_profile
from robot_rl.sim.scene import BoardTexture, build_model, build_xml

GOOD = {"name": "b", "squares_x": 5, "squares_y": 7, "square_length": 0.03, "marker_length": 0.022}


def test_shipped_boards_load_and_detect_on_their_own_image():
    names = sorted(f.stem for d in board_dirs() if d.is_dir() for f in d.glob("*.yaml"))
    assert {"charuco_5x7", "charuco_8x11"} <= set(names)
    for name in names:
        board = Board(load_board(name))
        det = board.detect(board.image(60, margin_squares=0.5))
        assert len(det) == board.spec.n_corners, name
        assert np.allclose(det.object_points[:, 2], 0) and det.object_points[:, :2].max() < max(board.spec.size_m)


@pytest.mark.parametrize("change, field, problem", [
    ({"marker_length": 0.03}, "marker_length", "smaller than square_length"),
    ({"square_length": 30}, "square_length", "must be in metres"),
    ({"dictionary": "DICT_9X9_1"}, "dictionary", "unknown ArUco dictionary"),
    ({"squares_x": 11, "squares_y": 11}, "dictionary", "DICT_4X4_50 has 50 markers, the board needs 60"),
    ({"squares_y": 2}, "squares_x", "at least 3x3 squares"),
])
def test_bad_boards_are_rejected_naming_the_field(change, field, problem):
    with pytest.raises(ConfigError) as e:
        from_dict(BoardSpec, {**GOOD, **change})
    assert e.value.field == field and problem in str(e.value)
    with pytest.raises(ConfigError, match="unknown board 'nope'; boards: .*charuco_5x7"):
        load_board("nope")


def test_printable_png_and_pdf_have_the_stated_physical_size(tmp_path, capsys):
    spec = load_board("charuco_5x7")
    image, square = printable(spec, 300)
    px = round(0.030 / 0.0254 * 300)
    assert image.shape == (8 * px, 6 * px)  # 7 rows + a half-square margin each side (and 5 columns + margin)
    assert square == pytest.approx(0.030, abs=0.0001)
    assert len(Board(spec).detect(image)) == spec.n_corners

    assert main(["calibrate", "board", "--board", "charuco_5x7", "--out", str(tmp_path / "b.png"), "--dpi", "300"]) == 0
    assert "150 x 210 mm at 300 dpi" in capsys.readouterr().out
    png = Image.open(tmp_path / "b.png")
    assert png.size == (6 * px, 8 * px) and png.info["dpi"] == pytest.approx((300, 300), abs=0.01)

    assert main(["calibrate", "board", "--out", str(tmp_path / "b.pdf"), "--dpi", "200"]) == 0
    pdf = (tmp_path / "b.pdf").read_bytes()
    box = [float(v) for v in re.search(rb"/MediaBox \[ ([\d. ]+) \]", pdf).group(1).split()]
    px = round(0.030 / 0.0254 * 200)
    assert box[2:] == pytest.approx([6 * px / 200 * 72, 8 * px / 200 * 72], abs=0.01)  # points at 72 per inch
    assert b"/DCTDecode" not in pdf  # no JPEG blur on the edges

    assert main(["calibrate", "board", "--out", str(tmp_path / "b.jpg")]) == 2
    assert "must end in .png or .pdf" in capsys.readouterr().err and not (tmp_path / "b.jpg").exists()
    with pytest.raises(ConfigError, match="use a higher dpi"):
        printable(spec, 10)


def test_the_sim_board_is_only_added_when_requested():
    profile = load_profile("sim")
    assert "calibration_board" not in build_xml(profile)
    spec = load_board("charuco_5x7")
    model = build_model(profile, BoardTexture(texture_png(spec, 32), *spec.size_m))
    plain = build_model(profile)
    assert model.body("calibration_board").mocapid[0] >= 0 and model.nmocap == plain.nmocap + 1
    assert model.ngeom == plain.ngeom + 1 and model.nbody == plain.nbody + 1
    geom = model.geom("calibration_board")
    assert geom.contype[0] == 0 and geom.conaffinity[0] == 0  # visual only: never touches the robot or the cube
