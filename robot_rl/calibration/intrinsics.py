"""Camera intrinsics from ChArUco views (cv2.calibrateCamera), with feedback while collecting.

A view is kept only when it shows enough corners and a board pose unlike the views already kept;
`coverage()`/`hints()` say which image regions and tilts are still missing. `calibrate()` refuses
(CalibrationError saying what to do) when the views cannot determine the intrinsics: too few
views, or every view showing the board at the same tilt (parallel board planes leave the focal
length unobservable). Nothing is written unless a calibration succeeded.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from robot_rl.calibration.board import Board, Detection
from robot_rl.calibration.files import CalibrationError

GRID = 3  # image split into GRID x GRID regions for coverage
CELL_NAMES = [["top-left", "top", "top-right"], ["left", "centre", "right"], ["bottom-left", "bottom", "bottom-right"]]
TILT_DEG = 15.0  # a view counts as tilted left/right/up/down beyond this
MIN_TILT_SPREAD_DEG = 10.0  # board normals of all views within this cone -> degenerate


@dataclass
class ViewResult:
    accepted: bool
    message: str
    corners: int = 0


@dataclass
class IntrinsicsResult:
    width: int
    height: int
    camera_matrix: np.ndarray  # 3x3
    distortion: np.ndarray  # k1 k2 p1 p2 k3 (plumb_bob)
    rms: float  # px, reprojection error over all corners
    per_view_rms: list[float] = field(default_factory=list)
    board: str = ""
    scale: float = 1.0  # != 1 when rescaled from the resolution the views were taken at

    @property
    def fx_fy_cx_cy(self) -> tuple[float, float, float, float]:
        k = self.camera_matrix
        return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])

    def scaled(self, width: int, height: int) -> "IntrinsicsResult":
        """The same camera at another resolution of the same aspect ratio (pixel centres at integers)."""
        s = width / self.width
        if abs(height / self.height - s) > 1e-6:
            raise CalibrationError(f"cannot rescale {self.width}x{self.height} to {width}x{height}: the aspect ratio "
                                   "differs; calibrate at the camera's own resolution")
        k = self.camera_matrix.copy()
        k[0, 0] *= s
        k[1, 1] *= s
        k[0, 2] = (k[0, 2] + 0.5) * s - 0.5
        k[1, 2] = (k[1, 2] + 0.5) * s - 0.5
        return IntrinsicsResult(width, height, k, self.distortion.copy(), self.rms * s,
                                [e * s for e in self.per_view_rms], self.board, self.scale * s)

    def meta(self) -> dict:
        return {"rms_px": round(self.rms, 4), "views": len(self.per_view_rms), "board": self.board,
                "calibrated_at": [int(round(self.width / self.scale)), int(round(self.height / self.scale))],
                "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "tool": "robot-rl calibrate camera"}

    def summary(self) -> str:
        fx, fy, cx, cy = self.fx_fy_cx_cy
        return (f"{self.width}x{self.height}: fx {fx:.2f} fy {fy:.2f} cx {cx:.2f} cy {cy:.2f} px, "
                f"distortion {np.array2string(self.distortion, precision=4)}, RMS {self.rms:.3f} px "
                f"over {len(self.per_view_rms)} views")


@dataclass
class _View:
    det: Detection
    normal: np.ndarray  # board normal in the camera frame (from a rough pose)
    tilt: tuple[float, float]  # degrees: left/right (about y), up/down (about x)


class IntrinsicsCalibrator:
    def __init__(self, board: Board, image_size: tuple[int, int], *, min_corners: int | None = None,
                 min_views: int = 8, novelty: float = 0.04, guess: np.ndarray | None = None, rms_limit: float = 1.0):
        """`image_size` (width, height); `guess` a rough camera matrix for tilt feedback only (device
        intrinsics, or None for f = image width); `novelty` the fraction of the image diagonal the
        corners must move for a view to count as a new pose."""
        self.board = board
        self.width, self.height = image_size
        self.min_corners = min_corners or max(6, board.spec.n_corners // 2)
        self.min_views = min_views
        self.novelty_px = novelty * math.hypot(self.width, self.height)
        self.rms_limit = rms_limit
        f = float(self.width)
        self.guess = guess if guess is not None else np.array(
            [[f, 0, (self.width - 1) / 2], [0, f, (self.height - 1) / 2], [0, 0, 1.0]])
        self.views: list[_View] = []

    # -- collecting -----------------------------------------------------------------------------
    def add_view(self, image: np.ndarray) -> ViewResult:
        if image.shape[1] != self.width or image.shape[0] != self.height:
            return ViewResult(False, f"image is {image.shape[1]}x{image.shape[0]}, expected {self.width}x{self.height}")
        det = self.board.detect(image)
        if det.markers == 0:
            return ViewResult(False, "board not detected: make sure the whole board is "
                                     f"lit, sharp and matches {self.board.spec.describe()}")
        if len(det) < self.min_corners or self.board.collinear(det):
            return ViewResult(False, f"only {len(det)} corners seen (need {self.min_corners}): bring more of the "
                                     "board into view", len(det))
        for i, view in enumerate(self.views):
            moved = _displacement(view.det, det)
            if moved is not None and moved < self.novelty_px:
                return ViewResult(False, f"same pose as view {i + 1} (corners moved {moved:.0f} px, need "
                                         f"{self.novelty_px:.0f}): move or tilt the board", len(det))
        normal, tilt = self._tilt(det)
        self.views.append(_View(det, normal, tilt))
        return ViewResult(True, f"view {len(self.views)}: {len(det)} corners, tilt {tilt[0]:+.0f}/{tilt[1]:+.0f} deg",
                          len(det))

    def _tilt(self, det: Detection) -> tuple[np.ndarray, tuple[float, float]]:
        ok, rvec, _ = cv2.solvePnP(det.object_points, det.image_points, self.guess, None)
        n = cv2.Rodrigues(rvec)[0][:, 2] if ok else np.array([0.0, 0.0, 1.0])
        return n, (math.degrees(math.atan2(n[0], n[2])), math.degrees(math.atan2(n[1], n[2])))

    # -- feedback -------------------------------------------------------------------------------
    def coverage(self) -> dict:
        cells = np.zeros((GRID, GRID), bool)
        for view in self.views:
            c = np.clip((view.det.image_points / [self.width, self.height] * GRID).astype(int), 0, GRID - 1)
            cells[c[:, 1], c[:, 0]] = True
        tilts = {"left": any(v.tilt[0] < -TILT_DEG for v in self.views),
                 "right": any(v.tilt[0] > TILT_DEG for v in self.views),
                 "up": any(v.tilt[1] < -TILT_DEG for v in self.views),
                 "down": any(v.tilt[1] > TILT_DEG for v in self.views)}
        return {"views": len(self.views), "cells": cells, "tilts": tilts}

    def hints(self) -> list[str]:
        cov = self.coverage()
        out = []
        if cov["views"] < self.min_views:
            out.append(f"{cov['views']}/{self.min_views} views")
        missing = [CELL_NAMES[r][c] for r in range(GRID) for c in range(GRID) if not cov["cells"][r, c]]
        if missing:
            out.append("show the board in the " + ", ".join(missing) + " of the image")
        tilts = [k for k, v in cov["tilts"].items() if not v]
        if tilts:
            out.append("tilt the board " + "/".join(tilts) + f" (by {TILT_DEG + 10:.0f}-45 deg)")
        return out

    @property
    def ready(self) -> bool:
        cov = self.coverage()
        t = cov["tilts"]
        return (cov["views"] >= self.min_views and int(cov["cells"].sum()) >= GRID * GRID - 2
                and (t["left"] or t["right"]) and (t["up"] or t["down"]))

    # -- solving --------------------------------------------------------------------------------
    def calibrate(self) -> IntrinsicsResult:
        if len(self.views) < self.min_views:
            raise CalibrationError(f"only {len(self.views)} usable views, need at least {self.min_views}: show the board "
                                   "at more positions and tilts" + (f" ({'; '.join(self.hints())})" if self.views else ""))
        normals = np.array([v.normal for v in self.views])
        spread = math.degrees(math.acos(np.clip(np.min(normals @ normals.T), -1.0, 1.0)))
        if spread < MIN_TILT_SPREAD_DEG:
            raise CalibrationError(f"all {len(self.views)} views show the board at the same tilt (normals within "
                                   f"{spread:.1f} deg): parallel views cannot determine the focal length; tilt the "
                                   "board 20-45 deg left/right and up/down between views")
        obj = [v.det.object_points.reshape(-1, 1, 3) for v in self.views]
        img = [v.det.image_points.reshape(-1, 1, 2) for v in self.views]
        rms, k, dist, _r, _t, _si, _se, per_view = cv2.calibrateCameraExtended(
            obj, img, (self.width, self.height), None, None, flags=cv2.CALIB_FIX_K3)
        result = IntrinsicsResult(self.width, self.height, k, dist.ravel()[:5], float(rms),
                                  [float(e) for e in np.ravel(per_view)], self.board.spec.name)
        if not np.isfinite(rms) or rms > self.rms_limit:
            worst = np.argsort(result.per_view_rms)[::-1][:3] + 1
            raise CalibrationError(f"RMS reprojection error {rms:.2f} px is above {self.rms_limit} px (worst views: "
                                   f"{', '.join(map(str, worst))}): check that the board definition matches the print "
                                   "(measure a square), that the board is flat and the images sharp, then recollect")
        return result


def _displacement(a: Detection, b: Detection) -> float | None:
    """Median pixel motion of the corners two detections share; None if they share too few to compare."""
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    if len(common) < max(4, len(b.ids) // 2):
        return None
    return float(np.median(np.linalg.norm(a.image_points[ia] - b.image_points[ib], axis=1)))
