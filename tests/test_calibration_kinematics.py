"""The profile's `kinematics:` section: typed, validated with errors naming the field, and the FK of
sim.yaml's chain equal to MuJoCo's body poses for the scene robot_rl/sim/scene.py builds."""
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from robot_rl.calibration.geometry import make_T, pose_error, rpy_matrix
from robot_rl.calibration.kinematics import ChainFK
from robot_rl.config import ConfigError, from_dict, load_profile
from robot_rl.config.kinematics import KinematicsSpec
from robot_rl.sim.scene import ARM_JOINTS, build_model

SIM = Path(__file__).resolve().parents[1] / "hardware" / "profiles" / "sim.yaml"
PROFILE = load_profile("sim")


def test_sim_chain_matches_mujoco():
    model = build_model(PROFILE)
    data = mujoco.MjData(model)
    fk = ChainFK.of(PROFILE)
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = np.r_[[rng.uniform(j.lower, j.upper) for j in PROFILE.robot.joints]]
        for name, value in zip(ARM_JOINTS, q):
            data.qpos[model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(model, data)
        poses = fk.poses(q)
        for body in ("waist_link", "upper_arm", "forearm", "wrist", "hand"):
            truth = make_T(data.body(body).xmat.reshape(3, 3), data.body(body).xpos)
            dt, dr = pose_error(poses[body], truth)
            assert dt < 1e-9 and dr < 1e-4, (body, q)
        assert np.allclose(poses["tcp"][:3, 3], data.site("tcp").xpos, atol=1e-9)
    assert fk.spec.flange_frame == "hand" and np.allclose(fk.frame(q), poses["hand"])
    with pytest.raises(ValueError, match="expected 6 joint positions"):
        fk.poses(q[:5])


def test_fixed_rotations_and_prismatic_joints():
    spec = from_dict(KinematicsSpec, {"chain": [
        {"name": "a", "xyz": [0.1, 0, 0], "rpy": [0, 0, 1.5707963267948966], "joint": "j1", "axis": [0, 0, 1]},
        {"name": "b", "xyz": [0, 0, 0.2], "joint": "j2", "type": "prismatic", "axis": [1, 0, 0]},
        {"name": "tool", "xyz": [0.05, 0, 0], "rpy": [0.3, -0.2, 0.1]}]})
    fk = ChainFK(spec, ["j1", "j2"])
    T = fk.poses([0.0, 0.3])
    assert np.allclose(T["b"][:3, 3], [0.1, 0.3, 0.2])  # the slide runs along a's x, rotated to base y
    assert np.allclose(T["tool"][:3, :3], rpy_matrix([0, 0, np.pi / 2]) @ rpy_matrix([0.3, -0.2, 0.1]))
    assert fk.spec.flange_frame == "tool"


def write_variant(tmp_path, mutate) -> Path:
    data = yaml.safe_load(SIM.read_text())
    mutate(data["kinematics"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda k: k["chain"][1].update(joint="shoulder_lift"), "kinematics.chain[1].joint", "is not a robot joint"),
    (lambda k: k.update(flange="palm"), "kinematics.flange", "is not a frame of the chain"),
    (lambda k: k["chain"][2].update(name="upper_arm"), "kinematics.chain", "duplicate frame name(s): upper_arm"),
    (lambda k: k["chain"][3].update(joint="elbow"), "kinematics.chain", "used by more than one frame: elbow"),
    (lambda k: k["chain"][0].update(axis=[0, 0, 0]), "kinematics.chain[0].axis", "must not be the zero vector"),
    (lambda k: k["chain"][0].update(xyz=[0, 0]), "kinematics.chain[0].xyz", "must be 3 finite numbers"),
    (lambda k: k["chain"][0].update(type="spherical"), "kinematics.chain[0].type", "must be one of"),
    (lambda k: k.update(chain=[]), "kinematics.chain", "a flange needs a chain of frames"),
])
def test_bad_kinematics_are_rejected_naming_the_field(tmp_path, mutate, field, problem):
    path = write_variant(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        load_profile(str(path))
    assert f"{path}: {field}" in str(e.value) and problem in str(e.value)


def test_profiles_without_kinematics_still_load_and_say_what_is_missing():
    from robot_rl.calibration.files import CalibrationError

    koch = load_profile("koch_real")
    assert not koch.kinematics.described
    with pytest.raises(CalibrationError, match="has no 'kinematics:' section"):
        ChainFK.of(koch)
