"""MJCF generation for the tabletop scene, templated from the profile.

The camera resolutions, taxel grids, joint limits and physics timestep come from the profile, so the
model is generated in Python instead of living in a static XML file. Geometry constants are module
level so the IK and the tests read the same numbers the model was built from.

Kinematics (all joint frames aligned with the world at q = 0): the upper arm points up (+z), the
forearm and the hand point forward (+x). Pitch joints rotate about +y, so a positive angle tilts a
link forward/down; the gripper points straight down when shoulder + elbow + wrist_pitch = pi/2.
Finger opening q (m) is the distance from the grasp centre line to each finger's pad surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import mujoco

# --- geometry (metres) ---------------------------------------------------------------------------
SHOULDER_Z = 0.12       # shoulder axis height above the table top (table top is z = 0)
UPPER_ARM = 0.20        # shoulder -> elbow (along +z at q = 0)
FOREARM = 0.20          # elbow -> wrist_pitch (along +x at q = 0)
WRIST_TO_HAND = 0.04    # wrist_pitch -> wrist_roll
PALM_DEPTH = 0.03       # wrist_roll -> finger base
FINGER_LEN = 0.055      # finger base -> fingertip
PAD_X = (0.022, 0.052)  # taxel pad extent along the finger, from the finger base
PAD_WIDTH = 0.024       # taxel pad extent across the finger (hand z)
TCP_X = WRIST_TO_HAND + PALM_DEPTH + 0.5 * (PAD_X[0] + PAD_X[1])  # wrist_pitch axis -> grasp centre
CUBE_HALF = 0.0175      # 3.5 cm cube
CUBE_MASS = 0.05
TARGET_RADIUS = 0.025

# collision bits: table collides with robot+cube, cube with everything, robot not with itself
_TABLE = 'contype="1" conaffinity="0"'
_CUBE = 'contype="2" conaffinity="7"'
_ROBOT = 'contype="4" conaffinity="1"'
_VISUAL = 'contype="0" conaffinity="0"'

# joint -> (kp, kv, force limit); gravity is compensated (gravcomp) so gains only need to track
_GAINS = {
    "waist": (60.0, 6.0, 20.0),
    "shoulder": (120.0, 10.0, 30.0),
    "elbow": (80.0, 6.0, 20.0),
    "wrist_pitch": (30.0, 2.0, 10.0),
    "wrist_roll": (10.0, 0.6, 5.0),
}
GRIPPER_KP, GRIPPER_KV, GRIPPER_FORCE = 300.0, 8.0, 15.0
ARM_JOINTS = ("waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll")
GRIPPER_JOINTS = ("gripper", "gripper_right")  # MJCF joints; both follow the profile's gripper command

FRONT_CAMERA = {"pos": (0.62, -0.22, 0.45), "lookat": (0.17, 0.0, 0.06), "fovy": 55.0}  # world frame
WRIST_CAMERA = {"pos": (0.032, 0.0, -0.045), "lookat": (0.14, 0.0, 0.005), "fovy": 72.0}  # hand frame


@dataclass(frozen=True)
class BoardTexture:
    """A printed calibration board to add to the scene (only when asked: the task scene stays as is).

    It becomes the mocap body `calibration_board`, a visual-only textured quad whose body frame is the
    board's (OpenCV ChArUco) frame: origin at the image's top-left corner, x along the image width,
    y down the image, z into the board; the printed side faces -z. Move it with data.mocap_pos/quat.
    """

    png: bytes  # the board image (no margin); it spans exactly width x height metres
    width: float  # m
    height: float  # m


BOARD_ASSET = "calibration_board.png"


def _board_xml(board: BoardTexture | None) -> tuple[str, str]:
    """(asset lines, body lines) of the optional calibration board."""
    if board is None:
        return "", ""
    w, h = board.width, board.height
    asset = (f'\n    <texture name="calibration_board" type="2d" file="{BOARD_ASSET}"/>\n'
             f'    <material name="calibration_board" texture="calibration_board" specular="0" reflectance="0" '
             f'emission="0.4"/>\n'
             f'    <mesh name="calibration_board" inertia="shell" vertex="0 0 0  {w:.9g} 0 0  {w:.9g} {h:.9g} 0  '
             f'0 {h:.9g} 0" face="0 2 1  0 3 2" texcoord="0 0  1 0  1 1  0 1"/>')
    body = (f'\n    <body name="calibration_board" mocap="true" pos="0.25 {h / 2:.9g} 0.0005" quat="0 1 0 0">\n'
            f'      <geom name="calibration_board" type="mesh" mesh="calibration_board" material="calibration_board" '
            f'{_VISUAL}/>\n'
            f'    </body>')
    return asset, body


def _f(v) -> str:
    return " ".join(f"{x:.6g}" for x in np.atleast_1d(v))


def _xyaxes(pos, lookat, up=(0.0, 0.0, 1.0)) -> str:
    """MuJoCo camera axes so the camera at `pos` looks at `lookat` with `up` pointing up in the image."""
    fwd = np.asarray(lookat, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return _f(np.concatenate([x, y]))


def _check_profile(profile) -> None:
    names = profile.robot.joint_names
    expected = list(ARM_JOINTS) + ["gripper"]
    if names != expected:
        raise ValueError(f"the MuJoCo scene has joints {expected} (in this order); profile {profile.source or profile.name!r} "
                         f"lists {names}")
    if profile.sim is None:
        raise ValueError(f"profile {profile.name!r} has no 'sim:' section")
    for t in profile.tactile:
        if t.name not in ("left_finger", "right_finger"):
            raise ValueError(f"tactile sensor {t.name!r}: the sim has pads only on 'left_finger' and 'right_finger'")
    for c in profile.cameras:
        if c.name not in ("front", "wrist"):
            raise ValueError(f"camera {c.name!r}: the sim has only the 'front' and 'wrist' cameras")


def _finger(name: str, side: float, grid: tuple[int, int] | None) -> str:
    """One finger body; `side` +1 (left, +y) or -1 (right). Taxels are small spheres whose tips form the
    pad surface at y = 0 in the finger frame, each covered by a box touch site (one taxel each)."""
    joint = "gripper" if side > 0 else "gripper_right"
    rows, cols = grid if grid else (4, 4)
    dx = (PAD_X[1] - PAD_X[0]) / rows
    dz = PAD_WIDTH / cols
    r = 0.45 * min(dx, dz)
    back = 0.004
    lines = [f'<body name="{name}" pos="{PALM_DEPTH} 0 0" gravcomp="1">',
             f'  <joint name="{joint}" type="slide" axis="0 {side:g} 0" range="0 0.04" damping="1" armature="0.01"/>',
             f'  <geom name="{name}_link" type="box" class="robot" pos="{FINGER_LEN / 2:.5f} {side * (r + back + 0.004):.5f} 0" '
             f'size="{FINGER_LEN / 2:.5f} 0.004 0.014" mass="0.03"/>',
             f'  <geom name="{name}_pad" type="box" class="robot" material="pad" '
             f'pos="{sum(PAD_X) / 2:.5f} {side * (r + back / 2):.5f} 0" size="{(PAD_X[1] - PAD_X[0]) / 2:.5f} {back / 2} {PAD_WIDTH / 2:.5f}" mass="0.005"/>']
    for i in range(rows):  # row 0 at the palm end, last row at the fingertip
        x = PAD_X[0] + (i + 0.5) * dx
        for j in range(cols):  # col 0 at hand -z
            z = -PAD_WIDTH / 2 + (j + 0.5) * dz
            lines.append(f'  <geom name="{name}_bump_{i}_{j}" type="sphere" class="robot" material="pad" '
                         f'pos="{x:.5f} {side * r:.5f} {z:.5f}" size="{r:.5f}" mass="0.0001"/>')
            if grid:
                lines.append(f'  <site name="{name}_taxel_{i}_{j}" type="box" group="4" rgba="0 0 0 0" '
                             f'pos="{x:.5f} 0 {z:.5f}" size="{dx / 2:.5f} 0.002 {dz / 2:.5f}"/>')
    lines.append("</body>")
    return "\n".join("            " + s for s in lines)


def build_xml(profile, board: BoardTexture | None = None) -> str:
    """The scene MJCF for `profile` (validated against what the sim can provide), optionally with a
    calibration board (texture file BOARD_ASSET, supplied by `build_model`)."""
    _check_profile(profile)
    board_asset, board_body = _board_xml(board)
    joints = {j.name: j for j in profile.robot.joints}
    grids = {t.name: (t.rows, t.cols) for t in profile.tactile}
    cams = {c.name: c for c in profile.cameras}
    offw = max([c.width for c in profile.cameras] + [64])
    offh = max([c.height for c in profile.cameras] + [64])

    def rng(n):
        return f'range="{joints[n].lower:.6g} {joints[n].upper:.6g}"'

    actuators = []
    for n in ARM_JOINTS:
        kp, kv, fmax = _GAINS[n]
        actuators.append(f'<position name="{n}" joint="{n}" kp="{kp}" kv="{kv}" ctrlrange="{joints[n].lower:.6g} '
                         f'{joints[n].upper:.6g}" forcerange="{-fmax} {fmax}"/>')
    for n in GRIPPER_JOINTS:
        actuators.append(f'<position name="{n}" joint="{n}" kp="{GRIPPER_KP}" kv="{GRIPPER_KV}" '
                         f'ctrlrange="{joints["gripper"].lower:.6g} {joints["gripper"].upper:.6g}" '
                         f'forcerange="{-GRIPPER_FORCE} {GRIPPER_FORCE}"/>')
    sensors = []
    for fname in ("left_finger", "right_finger"):
        if fname in grids:
            rows, cols = grids[fname]
            sensors += [f'<touch name="{fname}_taxel_{i}_{j}" site="{fname}_taxel_{i}_{j}"/>'
                        for i in range(rows) for j in range(cols)]
    fr = FRONT_CAMERA
    wr = WRIST_CAMERA
    front_cam = (f'<camera name="front" pos="{_f(fr["pos"])}" xyaxes="{_xyaxes(fr["pos"], fr["lookat"])}" '
                 f'fovy="{fr["fovy"]}"/>' if "front" in cams else "")
    wrist_cam = (f'<camera name="wrist" pos="{_f(wr["pos"])}" xyaxes="{_xyaxes(wr["pos"], wr["lookat"], (0, 0, -1))}" '
                 f'fovy="{wr["fovy"]}"/>' if "wrist" in cams else "")
    return f"""<mujoco model="robot_rl_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{profile.sim.physics_dt}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <statistic extent="1.0" center="0.2 0 0.1"/>
  <visual>
    <global offwidth="{offw}" offheight="{offh}"/>
    <quality shadowsize="0" offsamples="0"/>
    <map znear="0.01" zfar="3"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="1 0.005 0.0001" solref="0.004 1"/>
    <default class="robot">
      <geom {_ROBOT} rgba="0.25 0.27 0.3 1" group="1"/>
      <joint damping="0.5" armature="0.02"/>
    </default>
  </default>
  <asset>
    <material name="table" rgba="0.72 0.62 0.48 1" reflectance="0" specular="0"/>
    <material name="floor" rgba="0.3 0.3 0.33 1" reflectance="0" specular="0"/>
    <material name="link" rgba="0.85 0.85 0.88 1" reflectance="0" specular="0.1"/>
    <material name="pad" rgba="0.1 0.1 0.1 1" reflectance="0" specular="0"/>
    <material name="cube" rgba="0.85 0.15 0.12 1" reflectance="0" specular="0.1"/>
    <material name="target" rgba="0.1 0.75 0.2 1" reflectance="0" specular="0"/>{board_asset}
  </asset>
  <worldbody>
    <light name="top" pos="0.3 0.3 1.5" dir="-0.1 -0.2 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" material="floor" {_VISUAL}/>
    <geom name="table" type="box" pos="0.3 0 -0.02" size="0.55 0.6 0.02" material="table" {_TABLE}/>
    {front_cam}
    <body name="target" mocap="true" pos="0.25 0.1 0">
      <geom name="target" type="cylinder" size="{TARGET_RADIUS} 0.0008" pos="0 0 0.0008" material="target" {_VISUAL}/>
    </body>{board_body}
    <body name="cube" pos="0.25 -0.1 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="{CUBE_MASS}" material="cube" {_CUBE}
            friction="1 0.005 0.0001" condim="4"/>
    </body>
    <body name="base">
      <geom name="base" type="cylinder" size="0.06 0.02" pos="0 0 0.02" class="robot" material="link"/>
      <body name="waist_link" pos="0 0 0.04" gravcomp="1">
        <joint name="waist" axis="0 0 1" {rng("waist")} class="robot"/>
        <geom type="cylinder" size="0.045 0.03" pos="0 0 0.03" class="robot" mass="0.4"/>
        <body name="upper_arm" pos="0 0 {SHOULDER_Z - 0.04}" gravcomp="1">
          <joint name="shoulder" axis="0 1 0" {rng("shoulder")} class="robot"/>
          <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.022" class="robot" material="link" mass="0.3"/>
          <body name="forearm" pos="0 0 {UPPER_ARM}" gravcomp="1">
            <joint name="elbow" axis="0 1 0" {rng("elbow")} class="robot"/>
            <geom type="capsule" fromto="0 0 0 {FOREARM} 0 0" size="0.018" class="robot" material="link" mass="0.25"/>
            <body name="wrist" pos="{FOREARM} 0 0" gravcomp="1">
              <joint name="wrist_pitch" axis="0 1 0" {rng("wrist_pitch")} class="robot"/>
              <geom type="capsule" fromto="0 0 0 {WRIST_TO_HAND - 0.01} 0 0" size="0.016" class="robot" mass="0.08"/>
              <body name="hand" pos="{WRIST_TO_HAND} 0 0" gravcomp="1">
                <joint name="wrist_roll" axis="1 0 0" {rng("wrist_roll")} class="robot"/>
                <geom name="palm" type="box" pos="{PALM_DEPTH / 2} 0 0" size="{PALM_DEPTH / 2} 0.056 0.02" class="robot" mass="0.12"/>
                <site name="tcp" pos="{TCP_X - WRIST_TO_HAND:.5f} 0 0" size="0.004" rgba="1 0 1 0" group="4"/>
                {wrist_cam}
{_finger("left_finger", 1.0, grids.get("left_finger"))}
{_finger("right_finger", -1.0, grids.get("right_finger"))}
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    {chr(10).join("    " + a for a in actuators).strip()}
  </actuator>
  <sensor>
    {chr(10).join("    " + s for s in sensors).strip()}
  </sensor>
</mujoco>
"""


def build_model(profile, board: BoardTexture | None = None) -> mujoco.MjModel:
    """Compile the scene for `profile` (plus an optional calibration board); a compile error carries
    the profile name."""
    assets = {BOARD_ASSET: board.png} if board is not None else None
    try:
        return mujoco.MjModel.from_xml_string(build_xml(profile, board), assets)
    except ValueError as e:
        raise ValueError(f"MuJoCo scene for profile {profile.name!r} failed to compile: {e}") from e
