"""Cheap offscreen RGB-D rendering: one GL context for all cameras, one draw per frame.

`mujoco.Renderer` draws the scene twice for RGB + depth and owns a context per resolution; here one
context (sized by the model's offscreen buffer, i.e. the largest camera) serves every camera through
a viewport of that camera's size, and colour and depth are read back from the same draw.
Depth is z-depth along the optical axis (like a RealSense), in millimetres, 0 = nothing hit.
"""
from __future__ import annotations

import atexit
import math
import threading
import weakref

import numpy as np

import mujoco


def pinhole(fovy_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of MuJoCo's symmetric frustum (square pixels, so fx = fy), OpenCV convention
    (pixel centres at integer coordinates, so the optical axis is at ((W-1)/2, (H-1)/2))."""
    f = 0.5 * height / math.tan(0.5 * math.radians(fovy_deg))
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


class RGBDRenderer:
    def __init__(self, model: mujoco.MjModel, sizes: dict[str, tuple[int, int]]):
        """`sizes` maps camera name -> (width, height); every camera must exist in the model."""
        from mujoco.rendering.classic import gl_context

        if gl_context.GLContext is None:
            raise RuntimeError("MuJoCo has no OpenGL backend (set MUJOCO_GL=egl before importing mujoco)")
        self.model = model
        self._ids = {}
        for name, (w, h) in sizes.items():
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
            if cid < 0:
                raise ValueError(f"camera {name!r} is not in the MuJoCo model")
            if w > model.vis.global_.offwidth or h > model.vis.global_.offheight:
                raise ValueError(f"camera {name!r}: {w}x{h} exceeds the offscreen buffer "
                                 f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}")
            self._ids[name] = cid
        self.sizes = dict(sizes)
        self._lock = threading.Lock()
        self._gl = gl_context.GLContext(model.vis.global_.offwidth, model.vis.global_.offheight)
        # registered after the EGL display's own atexit hook, so it runs before eglTerminate (LIFO)
        atexit.register(_close_at_exit, weakref.ref(self))
        self._gl.make_current()
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom))
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        extent = model.stat.extent
        self.near = np.float32(model.vis.map.znear * extent)
        self.far = np.float32(model.vis.map.zfar * extent)

    def render(self, data: mujoco.MjData, name: str) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.sizes[name]
        rgb = np.empty((h, w, 3), np.uint8)
        zbuf = np.empty((h, w), np.float32)
        with self._lock:
            if self._con is None:
                raise RuntimeError("renderer is closed")
            self._gl.make_current()
            self._cam.fixedcamid = self._ids[name]
            mujoco.mjv_updateScene(self.model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
            rect = mujoco.MjrRect(0, 0, w, h)
            mujoco.mjr_render(rect, self._scene, self._con)
            mujoco.mjr_readPixels(rgb, zbuf, rect, self._con)
        # reversed-Z (ZEROFAR) window depth -> metric z-depth, as in mujoco.Renderer
        n, f = self.near, self.far
        c = np.float32(0.5) * (f + n) / (f - n) - np.float32(0.5)
        d = (f * n) / (f - n)
        z = d / (zbuf.astype(np.float64) + c)
        depth = np.where(z < f * 0.999, np.round(z * 1000.0), 0.0)
        depth = np.clip(depth, 0, 65535).astype(np.uint16)
        return np.ascontiguousarray(rgb[::-1]), np.ascontiguousarray(depth[::-1])

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._gl.make_current()
                self._con.free()
                self._con = None
            if self._gl is not None:
                self._gl.free()
                self._gl = None


def _close_at_exit(ref) -> None:
    renderer = ref()
    if renderer is not None:
        renderer.close()
