"""ChArUco boards: definitions (calibration/boards/*.yaml), detection, printable files.

A board definition states what is printed, in metres, so detections become metric 3D points:

    name: charuco_5x7
    squares_x: 5            # chessboard squares along the board's x (image width when printed)
    squares_y: 7
    square_length: 0.030    # m, as printed (measure it: printers scale)
    marker_length: 0.022    # m
    dictionary: DICT_4X4_50

Board frame (OpenCV's): origin at the outer top-left corner, x along the squares_x side, y along
squares_y, z into the board (the printed side faces -z).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robot_rl.config.typed import ConfigError, check, load_file
from robot_rl.paths import calibration_dir, share_dir

DEFAULT_BOARD = "charuco_5x7"


@dataclass
class BoardSpec:
    name: str
    squares_x: int
    squares_y: int
    square_length: float  # m
    marker_length: float  # m
    dictionary: str = "DICT_4X4_50"
    legacy_pattern: bool = False  # boards printed by OpenCV < 4.6 with an even number of rows

    def validate(self) -> None:
        check(self.squares_x >= 3 and self.squares_y >= 3, "a ChArUco board needs at least 3x3 squares", "squares_x")
        check(0 < self.square_length < 1, f"must be in metres (0..1), got {self.square_length}", "square_length")
        check(0 < self.marker_length < self.square_length,
              f"must be positive and smaller than square_length ({self.square_length}), got {self.marker_length}",
              "marker_length")
        check(hasattr(cv2.aruco, self.dictionary) and self.dictionary.startswith("DICT_"),
              f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)", "dictionary")
        n_markers = self.squares_x * self.squares_y // 2
        size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
        check(n_markers <= size, f"{self.dictionary} has {size} markers, the board needs {n_markers}", "dictionary")

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_length, self.squares_y * self.square_length

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def describe(self) -> str:
        return (f"{self.name}: {self.squares_x}x{self.squares_y} squares of {self.square_length * 1e3:g} mm, "
                f"markers {self.marker_length * 1e3:g} mm, {self.dictionary}")


def board_dirs() -> list[Path]:
    return [calibration_dir() / "boards", share_dir() / "calibration" / "boards"]


def load_board(name_or_path: str = DEFAULT_BOARD) -> BoardSpec:
    """A board from a YAML path or a name under calibration/boards/."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not p.is_file():
            raise ConfigError(f"board file not found: {p}")
        return load_file(BoardSpec, p)
    for d in board_dirs():
        if (d / f"{name_or_path}.yaml").is_file():
            return load_file(BoardSpec, d / f"{name_or_path}.yaml")
    known = sorted({f.stem for d in board_dirs() if d.is_dir() for f in d.glob("*.yaml")})
    raise ConfigError(f"unknown board {name_or_path!r}; boards: {', '.join(known) or 'none'} "
                      f"(searched {', '.join(str(d) for d in board_dirs())})")


@dataclass
class Detection:
    ids: np.ndarray  # (N,) ChArUco corner ids
    image_points: np.ndarray  # (N, 2) float32 pixels
    object_points: np.ndarray  # (N, 3) float32 metres in the board frame
    markers: int  # ArUco markers found

    def __len__(self) -> int:
        return len(self.ids)


class Board:
    """The OpenCV objects of a BoardSpec: detection and board images."""

    def __init__(self, spec: BoardSpec):
        self.spec = spec
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
        self.cv = cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_length, spec.marker_length,
                                         dictionary)
        self.cv.setLegacyPattern(spec.legacy_pattern)
        self.detector = cv2.aruco.CharucoDetector(self.cv)

    def detect(self, image: np.ndarray) -> Detection:
        """ChArUco corners in an RGB or gray image (empty when the board is not seen)."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _marker_corners, marker_ids = self.detector.detectBoard(gray)
        markers = 0 if marker_ids is None else len(marker_ids)
        if ids is None or len(ids) == 0:
            return Detection(np.zeros(0, np.int32), np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32), markers)
        ids = ids.ravel().astype(np.int32)
        obj = self.cv.getChessboardCorners()[ids].astype(np.float32)
        return Detection(ids, corners.reshape(-1, 2).astype(np.float32), obj, markers)

    def collinear(self, det: Detection) -> bool:
        return len(det) < 4 or bool(self.cv.checkCharucoCornersCollinear(det.ids.reshape(-1, 1)))

    def image(self, px_per_square: int, margin_squares: float = 0.0) -> np.ndarray:
        """The board as a gray uint8 image, `px_per_square` pixels per square, white margin around it."""
        margin = int(round(margin_squares * px_per_square))
        size = (self.spec.squares_x * px_per_square + 2 * margin, self.spec.squares_y * px_per_square + 2 * margin)
        return self.cv.generateImage(size, marginSize=margin, borderBits=1)


def printable(spec: BoardSpec, dpi: float) -> tuple[np.ndarray, float]:
    """The board at `dpi` with a one-square margin and a caption; returns (image, printed square in m).

    The square size is rounded to whole pixels, so the printed square can differ slightly from the
    definition; the caller reports it (and users should measure the print anyway).
    """
    px = int(round(spec.square_length / 0.0254 * dpi))
    if px < 20:
        raise ConfigError(f"{dpi:g} dpi gives only {px} px per {spec.square_length * 1e3:g} mm square; use a higher dpi")
    image = Board(spec).image(px, margin_squares=0.5)
    caption = f"{spec.describe()} - print at 100% ({dpi:g} dpi)"
    font, width = cv2.FONT_HERSHEY_SIMPLEX, image.shape[1] - px
    (tw, th), _ = cv2.getTextSize(caption, font, 1.0, 2)
    scale = min(width / tw, 0.25 * px / th)  # fit the margin's width and a quarter of its height
    thick = max(1, int(round(2 * scale)))
    cv2.putText(image, caption, (px // 2, image.shape[0] - px // 8), font, scale, 0, thick, cv2.LINE_AA)
    return image, px / dpi * 0.0254


def write_printable(spec: BoardSpec, out: str | Path, dpi: float = 300.0) -> tuple[Path, float]:
    """Write a PNG or PDF whose physical size at `dpi` is the board's; returns (path, printed square m)."""
    from PIL import Image  # pillow ships with matplotlib

    out = Path(out)
    fmt = {".png": "PNG", ".pdf": "PDF"}.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"board output must end in .png or .pdf, got {out.name!r}")
    image, square = printable(spec, dpi)
    buf = io.BytesIO()
    if fmt == "PDF":  # bilevel: lossless in the PDF (a gray image would be JPEG-compressed)
        Image.fromarray(image).point(lambda v: 255 if v >= 128 else 0).convert("1").save(buf, fmt, resolution=float(dpi))
    else:
        Image.fromarray(image).save(buf, fmt, dpi=(dpi, dpi))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out, square


def texture_png(spec: BoardSpec, px_per_square: int = 96) -> bytes:
    """PNG bytes of the bare board (no margin) for a simulated board (robot_rl.sim.scene.BoardTexture)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(Board(spec).image(px_per_square), cv2.COLOR_GRAY2BGR))
    assert ok
    return data.tobytes()
