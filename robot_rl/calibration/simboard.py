"""The sim scene with a ChArUco board, rendered at calibration resolution: ground truth for the
calibration tests and a way to try the tools without hardware.

The profile's 128x128 camera images are too small for reliable ChArUco detection, so views are
rendered at a larger size (same fovy, so the same camera up to pixel scale; see
`IntrinsicsResult.scaled` to bring a result back to the profile's resolution).
"""
from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from robot_rl.calibration.board import BoardSpec, texture_png
from robot_rl.calibration.geometry import inv_T, make_T, quat_matrix, quat_xyzw
from robot_rl.sim.render import RGBDRenderer, pinhole
from robot_rl.sim.scene import ARM_JOINTS, GRIPPER_JOINTS, BoardTexture, build_model

# MuJoCo cameras look along -z with y up; OpenCV optical frames look along +z with y down
MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])
HIDDEN_GROUP = 5  # not drawn by the default visualisation options


class SimBoardScene:
    def __init__(self, profile, board: BoardSpec, size: tuple[int, int] = (640, 480), px_per_square: int = 96):
        self.size = size
        cams = [dataclasses.replace(c, width=size[0], height=size[1]) for c in profile.cameras]
        self.profile = dataclasses.replace(profile, cameras=cams)
        w, h = board.size_m
        self.model = build_model(self.profile, BoardTexture(texture_png(board, px_per_square), w, h))
        self.data = mujoco.MjData(self.model)
        self.renderer = RGBDRenderer(self.model, {c.name: size for c in cams})
        self.joint_names = list(profile.robot.joint_names)
        self._qadr = [self.model.joint(n).qposadr[0] for n in ARM_JOINTS + GRIPPER_JOINTS]
        self._mocap = int(self.model.body("calibration_board").mocapid[0])
        base = self.model.body("base").id
        self._robot_geoms = [g for g in range(self.model.ngeom) if self._descends(self.model.geom_bodyid[g], base)]
        self._robot_groups = self.model.geom_group[self._robot_geoms].copy()
        mujoco.mj_forward(self.model, self.data)

    def _descends(self, body: int, root: int) -> bool:
        while body != 0:
            if body == root:
                return True
            body = self.model.body_parentid[body]
        return False

    # -- state ----------------------------------------------------------------------------------
    def set_joints(self, q) -> None:
        """Teleport the arm: profile joint order (5 arm joints + gripper opening)."""
        q = np.asarray(q, np.float64)
        self.data.qpos[self._qadr] = np.concatenate([q[:5], [q[5], q[5]]])
        mujoco.mj_forward(self.model, self.data)

    def hide_robot(self, hidden: bool = True) -> None:
        """Intrinsics views do not need the arm, and the fingers would cover the wrist camera's image."""
        self.model.geom_group[self._robot_geoms] = HIDDEN_GROUP if hidden else self._robot_groups

    def set_board(self, T_world_board: np.ndarray) -> None:
        x, y, z, w = quat_xyzw(T_world_board)
        self.data.mocap_pos[self._mocap] = T_world_board[:3, 3]
        self.data.mocap_quat[self._mocap] = [w, x, y, z]
        mujoco.mj_forward(self.model, self.data)

    def board_pose(self) -> np.ndarray:
        w, x, y, z = self.data.mocap_quat[self._mocap]
        return make_T(quat_matrix([x, y, z, w]), self.data.mocap_pos[self._mocap])

    def place_board_in_camera(self, camera: str, T_cam_board: np.ndarray) -> None:
        self.set_board(self.camera_pose(camera) @ T_cam_board)

    # -- ground truth ---------------------------------------------------------------------------
    def camera_pose(self, camera: str) -> np.ndarray:
        """T_world_camera (OpenCV optical frame)."""
        cid = self.model.camera(camera).id
        return make_T(self.data.cam_xmat[cid].reshape(3, 3) @ MJ_TO_OPTICAL, self.data.cam_xpos[cid])

    def body_pose(self, body: str) -> np.ndarray:
        b = self.data.body(body)
        return make_T(b.xmat.reshape(3, 3), b.xpos)

    def camera_in(self, camera: str, body: str) -> np.ndarray:
        """T_body_camera: the mounted transform hand-eye should recover."""
        return inv_T(self.body_pose(body)) @ self.camera_pose(camera)

    def camera_matrix(self, camera: str) -> np.ndarray:
        fx, fy, cx, cy = pinhole(float(self.model.camera(camera).fovy[0]), *self.size)
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    # -- images ---------------------------------------------------------------------------------
    def render(self, camera: str) -> np.ndarray:
        return self.renderer.render(self.data, camera)[0]

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> "SimBoardScene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def board_facing_camera(camera_matrix: np.ndarray, board: BoardSpec, pixel: tuple[float, float], distance: float,
                        tilt_deg: tuple[float, float] = (0.0, 0.0), roll_deg: float = 0.0) -> np.ndarray:
    """T_cam_board with the board's centre on the ray through `pixel` at `distance` (m), its printed
    side facing the camera, tilted about the camera's y (left/right) and x (up/down) axes."""
    from robot_rl.calibration.geometry import axis_angle

    ray = np.linalg.inv(camera_matrix) @ np.array([pixel[0], pixel[1], 1.0])
    centre = ray / np.linalg.norm(ray) * distance
    R = (axis_angle((0, 1, 0), np.radians(tilt_deg[0])) @ axis_angle((1, 0, 0), np.radians(-tilt_deg[1]))
         @ axis_angle((0, 0, 1), np.radians(roll_deg)))
    w, h = board.size_m
    return make_T(R, centre - R @ np.array([w / 2, h / 2, 0.0]))
