"""SimRobot: the MuJoCo tabletop robot behind the same interface a real driver offers.

Plain Python (no ROS): the sim node wraps it. Joint order, limits and home pose, camera sizes and
taxel grids all come from the profile. `time` counts simulated seconds since construction and is not
rewound by `reset()`, so stamps derived from it stay monotonic across episodes.

`drift` rehearses the case residual fine-tuning exists for: the robot changed after its
demonstrations were recorded. Each named joint settles that far from its commanded target (a cable
pulling on the waist, a replacement servo that tracks differently) while its encoder reports where it
really is, so a policy trained on the old robot's demonstrations misses by a systematic amount.
"""
from __future__ import annotations

import numpy as np

import mujoco

from robot_rl.sim.render import pinhole
from robot_rl.sim.scene import ARM_JOINTS, GRIPPER_JOINTS, build_model
from robot_rl.sim.task import PickPlaceTask


def parse_drift(text: str, joint_names: list[str]) -> dict[str, float]:
    """'waist=0.05,shoulder=-0.02' -> {joint: offset}; '' or 'none' -> {}. Errors name the bad item."""
    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",")):
        if item in ("", "none"):
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in joint_names:
            raise ValueError(f"drift item {item!r}: expected JOINT=OFFSET with JOINT one of {', '.join(joint_names)}")
        try:
            offset = float(value)
        except ValueError:
            raise ValueError(f"drift item {item!r}: offset {value.strip()!r} is not a number (rad, or m for the gripper)") from None
        if not (np.isfinite(offset) and abs(offset) <= 0.5):
            raise ValueError(f"drift item {item!r}: offset must be finite and at most 0.5 in magnitude")
        out[name] = offset
    return out


class SimRobot:
    def __init__(self, profile, seed: int = 0, render: bool = True, drift: dict[str, float] | None = None):
        self.profile = profile
        self.model = build_model(profile)
        self.data = mujoco.MjData(self.model)
        self.joint_names: list[str] = list(profile.robot.joint_names)
        self.physics_dt: float = float(self.model.opt.timestep)
        self.control_dt: float = 1.0 / float(profile.robot.control_rate_hz)
        self.home = np.array([j.home for j in profile.robot.joints], dtype=np.float64)
        self.lower = np.array([j.lower for j in profile.robot.joints], dtype=np.float64)
        self.upper = np.array([j.upper for j in profile.robot.joints], dtype=np.float64)
        self.drift = dict(drift or {})
        unknown = sorted(set(self.drift) - set(self.joint_names))
        if unknown:
            raise ValueError(f"drift names unknown joints {unknown}; profile joints: {', '.join(self.joint_names)}")
        self._offset = np.array([self.drift.get(n, 0.0) for n in self.joint_names], dtype=np.float64)
        m = self.model
        self._qadr = np.array([m.joint(n).qposadr[0] for n in ARM_JOINTS + GRIPPER_JOINTS])
        self._vadr = np.array([m.joint(n).dofadr[0] for n in ARM_JOINTS + GRIPPER_JOINTS])
        self._act = np.array([m.actuator(n).id for n in ARM_JOINTS + GRIPPER_JOINTS])
        self._tactile = {}
        for t in profile.tactile:
            first = m.sensor(f"{t.name}_taxel_0_0").adr[0]
            self._tactile[t.name] = (slice(first, first + t.rows * t.cols), (t.rows, t.cols))
        self.task = PickPlaceTask(m)
        self._rng = np.random.default_rng(seed)
        self._steps = 0  # physics steps since construction -> monotonic time
        self._renderer = None
        self._closed = False
        if render:
            from robot_rl.sim.render import RGBDRenderer

            self._renderer = RGBDRenderer(m, {c.name: (c.width, c.height) for c in profile.cameras})
        self.layout = None
        self.reset(seed)

    # --- episode -----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Arm to the home pose, fresh physics state, new cube/target layout from `seed` (or the next
        seed drawn from the robot's own generator)."""
        if seed is None:
            seed = int(self._rng.integers(2 ** 31))
        self.seed = int(seed)
        mujoco.mj_resetData(self.model, self.data)  # also clears warm starts: a seed replays exactly
        self._write_joints(self.home)
        self.layout = self.task.sample(np.random.default_rng(self.seed))
        self.task.apply(self.data, self.layout)
        self.set_target(self.home)
        self.data.time = self.time
        mujoco.mj_forward(self.model, self.data)

    def _write_joints(self, q: np.ndarray) -> None:
        self.data.qpos[self._qadr] = np.concatenate([q[:5], [q[5], q[5]]])
        self.data.qvel[self._vadr] = 0.0

    # --- control -----------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return self._steps * self.physics_dt

    def set_target(self, q: np.ndarray) -> None:
        """Position targets in profile joint order; the gripper value drives both fingers. A drifted
        joint settles `drift` away from its (limit-clipped) target."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"set_target expects {len(self.joint_names)} values ({', '.join(self.joint_names)}), "
                             f"got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"set_target got a non-finite target: {q}")
        q = np.clip(q, self.lower, self.upper) + self._offset
        self.data.ctrl[self._act] = np.concatenate([q[:5], [q[5], q[5]]])

    def step_physics(self, n: int = 1) -> None:
        n = int(n)
        if n > 0:
            mujoco.mj_step(self.model, self.data, nstep=n)
            self._steps += n

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, velocity, effort); gripper: mean finger opening (m), its rate, mean finger force (N)."""
        qp = self.data.qpos[self._qadr]
        qv = self.data.qvel[self._vadr]
        f = self.data.actuator_force[self._act]
        pos = np.concatenate([qp[:5], [0.5 * (qp[5] + qp[6])]])
        vel = np.concatenate([qv[:5], [0.5 * (qv[5] + qv[6])]])
        eff = np.concatenate([f[:5], [0.5 * (f[5] + f[6])]])
        return pos.astype(np.float64), vel.astype(np.float64), eff.astype(np.float64)

    def set_joint_positions(self, q: np.ndarray) -> None:
        """Teleport the arm (and hold it there): for tests and scripted setups, not for control."""
        q = np.asarray(q, dtype=np.float64)
        self._write_joints(q)
        self.set_target(q)
        mujoco.mj_forward(self.model, self.data)

    # --- sensors -----------------------------------------------------------------------------------
    def _need_renderer(self, camera: str):
        if self._renderer is None:
            why = "it has been closed" if self._closed else "it was created with render=False"
            raise RuntimeError(f"cannot render camera {camera!r}: this SimRobot has no renderer ({why})")
        if camera not in self._renderer.sizes:
            raise KeyError(f"unknown camera {camera!r}; profile cameras: {', '.join(self._renderer.sizes) or 'none'}")
        return self._renderer

    def render(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """rgb (H,W,3) uint8 and depth (H,W) uint16 millimetres (0 = no return)."""
        return self._need_renderer(camera).render(self.data, camera)

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy in pixels for `render(camera)`; needs no GL context."""
        spec = {c.name: c for c in self.profile.cameras}
        if camera not in spec:
            raise KeyError(f"unknown camera {camera!r}; profile cameras: {', '.join(spec) or 'none'}")
        return pinhole(float(self.model.camera(camera).fovy[0]), spec[camera].width, spec[camera].height)

    def tactile(self, sensor: str) -> np.ndarray:
        """(rows, cols) float32 normal force per taxel, newtons."""
        if sensor not in self._tactile:
            raise KeyError(f"unknown tactile sensor {sensor!r}; profile sensors: {', '.join(self._tactile) or 'none'}")
        sl, shape = self._tactile[sensor]
        return self.data.sensordata[sl].reshape(shape).astype(np.float32)

    # --- task --------------------------------------------------------------------------------------
    def task_state(self) -> dict:
        return self.task.state(self.data)

    def success(self) -> bool:
        return self.task.success(self.data)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
