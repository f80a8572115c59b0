"""Hand-eye calibration: where a camera sits relative to the arm.

- mount "hand" (eye-in-hand, e.g. a wrist camera): the board lies still in the workspace and the
  result is T_flange_camera.
- mount "fixed" (eye-to-hand, e.g. a front camera): the board is held by / fixed to the gripper and
  the result is T_base_camera.

Each view pairs a board pose seen by the camera (ChArUco corners + solvePnP with the calibrated
intrinsics) with the flange pose from the joint positions and the profile's forward kinematics.
OpenCV's linear solvers (`cv2.calibrateHandEye`, `cv2.calibrateRobotWorldHandEye`) give a start;
the result is the best of them refined by minimising the corner reprojection error over all views
(camera and board transforms together), which is what the data actually measures.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from robot_rl.calibration.board import Board
from robot_rl.calibration.files import CalibrationError, write_yaml
from robot_rl.calibration.geometry import (
    from_rvec, inv_T, make_T, quat_matrix, quat_xyzw, rotation_angle_deg, to_rvec,
)
from robot_rl.calibration.intrinsics import ViewResult
from robot_rl.calibration.kinematics import ChainFK
from robot_rl.config.typed import ConfigError
from robot_rl.config.typed import load_yaml as _load_yaml
from robot_rl.paths import calibration_dir

Mount = Literal["hand", "fixed"]
MIN_ROTATION_DEG = 5.0  # motions smaller than this say nothing about the rotation axis
MIN_AXIS_SPREAD_DEG = 15.0  # all motion axes within this of one another -> translation unobservable


@dataclass
class HandEyeView:
    q: np.ndarray  # joint positions (profile order)
    T_base_flange: np.ndarray
    T_cam_board: np.ndarray
    object_points: np.ndarray
    image_points: np.ndarray


@dataclass
class HandEyeResult:
    camera: str
    mount: Mount
    parent_frame: str  # flange frame (mount hand) or base frame (mount fixed)
    T_parent_camera: np.ndarray
    T_other: np.ndarray  # T_<board_frame>_board: the board in the base (hand) or flange (fixed), a by-product
    rms_px: float  # corner reprojection error through the whole chain
    spread_mm: float  # RMS scatter of the board pose predicted by each view
    spread_deg: float
    views: int
    method: str
    board_frame: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def child_frame(self) -> str:
        return f"{self.camera}_optical_frame"  # the frame_id of the camera's images

    def summary(self) -> str:
        t = self.T_parent_camera[:3, 3]
        return (f"{self.child_frame} in {self.parent_frame}: t = [{t[0]:+.4f}, {t[1]:+.4f}, {t[2]:+.4f}] m, "
                f"q(xyzw) = {np.round(quat_xyzw(self.T_parent_camera), 5).tolist()}; reprojection {self.rms_px:.2f} px, "
                f"board scatter {self.spread_mm:.2f} mm / {self.spread_deg:.2f} deg over {self.views} views ({self.method})")

    def to_dict(self) -> dict:
        r = lambda a: [round(float(x), 7) for x in a]  # noqa: E731
        return {"camera": self.camera, "mount": self.mount, "parent_frame": self.parent_frame,
                "child_frame": self.child_frame, "translation": r(self.T_parent_camera[:3, 3]),
                "rotation_xyzw": r(quat_xyzw(self.T_parent_camera)),
                "quality": {"reprojection_rms_px": round(self.rms_px, 4), "board_scatter_mm": round(self.spread_mm, 3),
                            "board_scatter_deg": round(self.spread_deg, 4), "views": self.views, "method": self.method},
                "board_pose": {"frame": self.board_frame,
                               "translation": r(self.T_other[:3, 3]), "rotation_xyzw": r(quat_xyzw(self.T_other))},
                "meta": {"recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         **self.meta}}

    def save(self, path: str | Path) -> Path:
        return write_yaml(path, self.to_dict(), header=f"hand-eye: pose of {self.child_frame} in {self.parent_frame} "
                                                       "(translation m, rotation quaternion x y z w)")


def handeye_path(setup: str, camera: str) -> Path:
    return calibration_dir() / setup / f"handeye_{camera}.yaml"


def load_handeye(path: str | Path) -> tuple[str, str, np.ndarray]:
    """(parent_frame, child_frame, T_parent_child) from a hand-eye file (for nodes publishing TF)."""
    data = _load_yaml(path)
    try:
        T = make_T(quat_matrix(data["rotation_xyzw"]), data["translation"])
        return str(data["parent_frame"]), str(data["child_frame"]), T
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"not a hand-eye calibration file ({e})", source=path) from None


class HandEyeCalibrator:
    def __init__(self, board: Board, camera_matrix: np.ndarray, distortion, fk: ChainFK, mount: Mount,
                 camera: str, min_views: int = 8, min_corners: int = 8):
        if mount not in ("hand", "fixed"):
            raise ValueError(f"mount must be 'hand' or 'fixed', got {mount!r}")
        self.board, self.fk, self.mount, self.camera = board, fk, mount, camera
        self.K = np.asarray(camera_matrix, np.float64)
        self.dist = np.zeros(5) if distortion is None else np.asarray(distortion, np.float64).ravel()
        self.min_views, self.min_corners = min_views, min_corners
        self.views: list[HandEyeView] = []
        self.rejected = 0

    def add(self, q, image: np.ndarray) -> ViewResult:
        """One robot pose (joint positions) and the image taken there, the arm standing still."""
        det = self.board.detect(image)
        if len(det) < self.min_corners or self.board.collinear(det):
            self.rejected += 1
            what = "board not detected" if len(det) == 0 else f"only {len(det)} corners (need {self.min_corners})"
            return ViewResult(False, f"{what}: skipped this pose", len(det))
        ok, rvec, tvec = cv2.solvePnP(det.object_points, det.image_points, self.K, self.dist,
                                      flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            self.rejected += 1
            return ViewResult(False, "board pose could not be solved: skipped this pose", len(det))
        rvec, tvec = cv2.solvePnPRefineLM(det.object_points, det.image_points, self.K, self.dist, rvec, tvec)
        q = np.asarray(q, np.float64).copy()
        self.views.append(HandEyeView(q, self.fk.frame(q), from_rvec(rvec, tvec), det.object_points, det.image_points))
        return ViewResult(True, f"view {len(self.views)}: {len(det)} corners", len(det))

    # -- checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise CalibrationError when the views cannot determine the camera pose."""
        n = len(self.views)
        if n < self.min_views:
            extra = f"; the board was not found in {self.rejected} images" if self.rejected else ""
            raise CalibrationError(f"only {n} usable views, need at least {self.min_views}{extra}: add poses where the "
                                   "camera sees most of the board, rotating the wrist differently in each")
        axes = []
        Rs = [v.T_base_flange[:3, :3] for v in self.views]
        for i in range(n):
            for j in range(i + 1, n):
                rvec = cv2.Rodrigues(Rs[i].T @ Rs[j])[0].ravel()
                if math.degrees(np.linalg.norm(rvec)) > MIN_ROTATION_DEG:
                    axes.append(rvec / np.linalg.norm(rvec))
        if not axes:
            raise CalibrationError(f"the flange barely rotates between the {n} poses (< {MIN_ROTATION_DEG:g} deg): the "
                                   "camera pose is unobservable from translations alone; rotate the wrist/arm by "
                                   "10-30 deg between poses")
        a = np.array(axes)
        spread = math.degrees(math.acos(np.clip(np.min(np.abs(a @ a.T)), 0.0, 1.0)))
        if spread < MIN_AXIS_SPREAD_DEG:
            raise CalibrationError(f"every motion between the {n} poses rotates about the same axis (within "
                                   f"{spread:.1f} deg): the camera position along that axis is unobservable; add poses "
                                   "that rotate about a second axis (e.g. wrist pitch as well as roll, or the waist)")

    # -- solving --------------------------------------------------------------------------------
    def _motions(self) -> list[np.ndarray]:
        """M_i such that T_cam_board_i = inv(X) @ M_i @ Y for both mounts."""
        return [inv_T(v.T_base_flange) if self.mount == "hand" else v.T_base_flange for v in self.views]

    def _linear(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Candidate (method, X, Y) from OpenCV's linear solvers."""
        M = self._motions()
        R_m = [np.linalg.inv(m)[:3, :3] for m in M]  # "gripper2base" as OpenCV wants it
        t_m = [np.linalg.inv(m)[:3, 3] for m in M]
        R_b = [v.T_cam_board[:3, :3] for v in self.views]
        t_b = [v.T_cam_board[:3, 3] for v in self.views]
        out = []
        for name in ("PARK", "TSAI", "DANIILIDIS", "HORAUD"):
            try:
                R, t = cv2.calibrateHandEye(R_m, t_m, R_b, t_b, method=getattr(cv2, f"CALIB_HAND_EYE_{name}"))
            except cv2.error:
                continue
            X = make_T(R, t)
            out.append((name.lower(), X, self._mean_other(X)))
        try:  # AX = ZB form: world = board, base = robot base (or flange for mount fixed)
            R_w2c = [v.T_cam_board[:3, :3] for v in self.views]
            t_w2c = [v.T_cam_board[:3, 3] for v in self.views]
            R_b2g = [m[:3, :3] for m in M]
            t_b2g = [m[:3, 3] for m in M]
            Rb, tb, Rg, tg = cv2.calibrateRobotWorldHandEye(R_w2c, t_w2c, R_b2g, t_b2g)
            X = inv_T(make_T(Rg, tg))
            out.append(("robot_world_shah", X, self._mean_other(X)))
        except cv2.error:
            pass
        return [c for c in out if np.all(np.isfinite(c[1]))]

    def _mean_other(self, X: np.ndarray) -> np.ndarray:
        """Y = inv(M_i) X T_cam_board_i averaged over views (rotation by SVD projection)."""
        Ys = [np.linalg.inv(m) @ X @ v.T_cam_board for m, v in zip(self._motions(), self.views)]
        u, _, vt = np.linalg.svd(sum(Y[:3, :3] for Y in Ys))
        R = u @ vt
        if np.linalg.det(R) < 0:
            R = u @ np.diag([1, 1, -1]) @ vt
        return make_T(R, np.mean([Y[:3, 3] for Y in Ys], axis=0))

    def _residuals(self, params: np.ndarray) -> np.ndarray:
        X, Y = from_rvec(params[:3], params[3:6]), from_rvec(params[6:9], params[9:12])
        inv_X = inv_T(X)
        res = []
        for m, v in zip(self._motions(), self.views):
            rvec, tvec = to_rvec(inv_X @ m @ Y)
            proj, _ = cv2.projectPoints(v.object_points, rvec, tvec, self.K, self.dist)
            res.append((proj.reshape(-1, 2) - v.image_points).ravel())
        return np.concatenate(res)

    def _refine(self, X: np.ndarray, Y: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
        """Levenberg-Marquardt on the corner reprojection error (numeric Jacobian; 12 parameters)."""
        p = np.concatenate([*to_rvec(X), *to_rvec(Y)])
        r = self._residuals(p)
        lam = 1e-3
        for _ in range(iterations):
            J = np.empty((len(r), 12))
            for k in range(12):
                step = 1e-6 if k % 6 < 3 else 1e-7
                dp = p.copy()
                dp[k] += step
                J[:, k] = (self._residuals(dp) - r) / step
            A, g = J.T @ J, J.T @ r
            improved = False
            while lam < 1e6:
                delta = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), -g)
                r_new = self._residuals(p + delta)
                if r_new @ r_new < r @ r:
                    p, r, lam, improved = p + delta, r_new, max(lam / 10, 1e-9), True
                    break
                lam *= 10
            if not improved or np.linalg.norm(delta) < 1e-10:
                break
        return from_rvec(p[:3], p[3:6]), from_rvec(p[6:9], p[9:12])

    def _rms(self, X: np.ndarray, Y: np.ndarray) -> float:
        r = self._residuals(np.concatenate([*to_rvec(X), *to_rvec(Y)]))
        return float(np.sqrt(np.mean(r.reshape(-1, 2) ** 2) * 2))

    def calibrate(self, refine: bool = True) -> HandEyeResult:
        self.check()
        candidates = self._linear()
        if not candidates:
            raise CalibrationError("every hand-eye solver failed on these views; collect poses with larger, varied "
                                   "wrist rotations")
        method, X, Y = min(candidates, key=lambda c: self._rms(c[1], c[2]))
        if refine:
            X, Y = self._refine(X, Y)
            method += "+reprojection_lm"
        Ys = [np.linalg.inv(m) @ X @ v.T_cam_board for m, v in zip(self._motions(), self.views)]
        spread_mm = 1e3 * math.sqrt(np.mean([np.sum((Yi[:3, 3] - Y[:3, 3]) ** 2) for Yi in Ys]))
        spread_deg = math.sqrt(np.mean([rotation_angle_deg(Yi[:3, :3].T @ Y[:3, :3]) ** 2 for Yi in Ys]))
        spec = self.fk.spec
        parent, board_frame = ((spec.flange_frame, spec.base_frame) if self.mount == "hand"
                               else (spec.base_frame, spec.flange_frame))
        return HandEyeResult(self.camera, self.mount, parent, X, Y, self._rms(X, Y), spread_mm, spread_deg,
                             len(self.views), method, board_frame,
                             {"board": self.board.spec.name, "tool": "robot-rl calibrate handeye"})


def calibration_poses(center, joints, n: int = 12, amplitude: float = 0.25, seed: int = 0,
                      fixed: tuple[str, ...] = ()) -> list[np.ndarray]:
    """`n` joint configurations around `center` (a pose where the camera sees the board) for the
    automatic hand-eye run: every joint not in `fixed` (and not the profile's gripper) offset by up to
    +-amplitude rad, within its limits with a 5 % margin. Small offsets keep the board in view and
    the arm near a pose the operator chose as safe; the robot still moves through the safety
    envelope. Random signs and sizes per joint make the poses rotate about different axes."""
    rng = np.random.default_rng(seed)
    center = np.asarray(center, np.float64)
    lower = np.array([j.lower for j in joints])
    upper = np.array([j.upper for j in joints])
    margin = 0.05 * (upper - lower)
    free = np.array([j.name not in fixed for j in joints])
    poses = []
    for k in range(n):
        offset = rng.uniform(0.4, 1.0, len(joints)) * amplitude * np.where(rng.random(len(joints)) < 0.5, -1, 1)
        poses.append(np.where(free, np.clip(center + offset, lower + margin, upper - margin), center))
    return poses
