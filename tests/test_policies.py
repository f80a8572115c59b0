"""Base policies (BC, diffusion) on tiny synthetic stores: shapes, normalizer, learning, checkpoint
round trip and hash, spec mismatch and bad-input errors, exact resume."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robot_rl.cli.main import main
from robot_rl.config import load_profile
from robot_rl.config.typed import ConfigError, from_dict
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import store_layout
from robot_rl.data.store import Store
from robot_rl.policies.checkpoint import checkpoint_hash, load_checkpoint, save_checkpoint
from robot_rl.policies.dataset import DatasetError
from robot_rl.policies.normalizer import Normalizer, compute_stats
from robot_rl.policies.policy import load_policy
from robot_rl.policies.registry import policy_classes
from robot_rl.policies.spec import SpecError
from robot_rl.policies.train import Trainer

SIZE, STEPS = 24, 20
TINY = {
    "policy": {"obs_horizon": 2, "pred_horizon": 8, "exec_horizon": 4,
               "observation": {"image": {"resize": 20, "crop": 16, "channels": [8, 16], "blocks": [1, 1],
                                         "keypoints": 4, "out_dim": 8},
                               "tactile": {"channels": 4, "out_dim": 8}, "proprio": {"hidden": 16, "out_dim": 16}}},
    "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "val_every": 1000, "log_every": 5, "val_batches": 1,
              "checkpoint_every": 1000, "val_fraction": 0.2},
}
HEAD = {"bc": {"hidden": [64]}, "diffusion": {"down_dims": [16, 32], "step_embed_dim": 16, "inference_steps": 4}}


def tiny_profile(size: int = SIZE, joints=None, tactile: bool = True):
    p = load_profile("sim")
    robot = p.robot if joints is None else dataclasses.replace(p.robot, joints=joints, gripper_joint="")
    return dataclasses.replace(p, robot=robot, cameras=[dataclasses.replace(c, width=size, height=size) for c in p.cameras],
                               tactile=p.tactile if tactile else [])


def make_store(path: Path, n_episodes: int = 5, profile=None, seed: int = 0) -> Path:
    """Episodes that move the arm from 0 towards a goal shown in the images (learnable)."""
    keys, attrs = store_layout(profile or tiny_profile())
    rng = np.random.default_rng(seed)
    with Store.create(path, keys=keys, attrs=attrs, durable=False) as store:
        writer = EpisodeWriter(store, flush_steps=8, background=False)
        for e in range(n_episodes):
            t = np.arange(STEPS)
            n = keys["action"].shape[0]
            goal = rng.uniform(-1, 1, n)
            data = {k: np.zeros((STEPS, *s.shape), s.dtype) for k, s in keys.items()}
            data["obs/joint_pos"] = (goal * t[:, None] / STEPS).astype(np.float32)
            data["action"] = (goal * (t[:, None] + 1) / STEPS).astype(np.float32)
            data["stamp"] = 100.0 * e + t / 10.0
            for k, s in keys.items():
                if k.startswith("obs/camera_"):
                    data[k][..., 0] = np.uint8(128 + 100 * goal[0])
                    data[k][..., 1] = (10 * t)[:, None, None]
                elif k.startswith("obs/tactile_"):
                    data[k] = rng.random((STEPS, *s.shape)).astype(np.float32)
            writer.begin(source="demo")
            for i in range(STEPS):
                writer.add_step({k: v[i] for k, v in data.items()})
            writer.commit(True, {"ok": True})
        writer.close()
    return path


def configs(policy: str, **train):
    pc, tc, _ = policy_classes(policy)
    return (from_dict(pc, {**TINY["policy"], **HEAD[policy]}), from_dict(tc, {**TINY["train"], **train}))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("policies") / "demos.zarr")


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    """One short run per policy class: {policy: (trainer, result)}."""
    torch.set_num_threads(1)
    out = {}
    for policy in ("bc", "diffusion"):
        pc, tc = configs(policy, steps=40)
        trainer = Trainer(store, policy, tmp_path_factory.mktemp(policy) / "run", policy_cfg=pc, train_cfg=tc, log=lambda s: None)
        before = fixed_batch_loss(trainer)
        result = trainer.run(progress=False)
        out[policy] = (trainer, result, before, fixed_batch_loss(trainer))
    return out


def fixed_batch_loss(trainer) -> float:
    """Training loss of the raw model on one fixed batch with fixed noise (comparable over time)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        trainer.model.eval()
        loss = float(trainer.model.compute_loss(trainer.data.sample(64, np.random.default_rng(0))))
        trainer.model.train()
    return loss


def window(policy, batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    obs = {}
    for k in policy.obs_keys:
        shape = (*lead, policy.obs_horizon, *policy.obs_shapes[k])
        obs[k] = rng.integers(0, 256, shape, dtype=np.uint8) if "camera" in k else rng.random(shape, dtype=np.float32)
    return obs


def test_normalizer_round_trip():
    rng = np.random.default_rng(0)
    data = {"action": rng.uniform(-2, 3, (500, 4)).astype(np.float32), "tac": rng.random((500, 2, 3)).astype(np.float32)}
    data["action"][:, 3] = 0.5  # a joint that never moves
    norm = Normalizer(compute_stats(data, {"action": "minmax", "tac": "meanstd"}))
    norm = Normalizer(json.loads(json.dumps(norm.to_json())))  # as stored in config.json
    a = torch.from_numpy(data["action"])
    y = norm.normalize("action", a)
    assert y[:, :3].min() >= -1 - 1e-6 and y[:, :3].max() <= 1 + 1e-6
    assert torch.allclose(y[:, :3].amin(0), torch.full((3,), -1.0), atol=1e-5)
    assert torch.allclose(y[:, 3], torch.zeros(500))
    torch.testing.assert_close(norm.unnormalize("action", y), a, atol=1e-5, rtol=0)
    t = norm.normalize("tac", torch.from_numpy(data["tac"]))
    assert abs(float(t.mean())) < 1e-4 and abs(float(t.std()) - 1) < 1e-2
    with pytest.raises(KeyError, match="no statistics"):
        norm.normalize("other", a)


@pytest.mark.parametrize("policy", ["bc", "diffusion"])
def test_shapes_and_limits(trained, policy):
    trainer, result = trained[policy][:2]
    p = load_policy(result.checkpoint, tiny_profile())
    assert (p.obs_horizon, p.pred_horizon, p.exec_horizon, p.action_dim) == (2, 8, 4, 6)
    assert p.obs_keys == sorted(["obs/camera_front", "obs/camera_wrist", "obs/joint_pos",
                                 "obs/tactile_left_finger", "obs/tactile_right_finger"])
    assert p.joint_names == tiny_profile().robot.joint_names
    chunk = p.predict(window(p), seed=1)
    assert chunk.shape == (8, 6) and chunk.dtype == np.float32
    assert (chunk >= p.lower).all() and (chunk <= p.upper).all()
    assert p.predict(window(p, batch=3), seed=1).shape == (3, 8, 6)
    assert p.features(window(p)).shape == (p.feature_dim,)
    assert p.features(window(p, batch=3)).shape == (3, p.feature_dim)
    np.testing.assert_array_equal(p.predict(window(p), seed=7), p.predict(window(p), seed=7))
    bad = window(p)
    bad["obs/joint_pos"] = bad["obs/joint_pos"][:1]
    with pytest.raises(ValueError, match="obs/joint_pos: expected \\(2, 6\\)"):
        p.predict(bad)
    with pytest.raises(KeyError, match="obs/camera_wrist"):
        p.predict({k: v for k, v in window(p).items() if k != "obs/camera_wrist"})


@pytest.mark.parametrize("policy", ["bc", "diffusion"])
def test_training_reduces_loss(trained, policy):
    _, result, before, after = trained[policy]
    assert after < {"bc": 0.8, "diffusion": 0.95}[policy] * before, (before, after)  # fixed batch and noise
    lines = [json.loads(line) for line in (result.out_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(5, 41, 5))
    assert "val_loss" in lines[-1] and "val_action_mse" in lines[-1]


@pytest.mark.parametrize("policy", ["bc", "diffusion"])
def test_checkpoint_round_trip(trained, policy, tmp_path):
    trainer, result = trained[policy][:2]
    p = load_policy(result.checkpoint)
    model = (trainer.ema.model if trainer.ema else trainer.model).eval()
    obs = {k: torch.from_numpy(v) for k, v in window(p, batch=2).items()}
    expect = model.predict_actions(obs, generator=torch.Generator().manual_seed(3)).numpy()
    got = p.model.predict_actions(obs, generator=torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(got, expect)
    cfg = json.loads((result.checkpoint / "config.json").read_text())
    assert cfg["policy"] == policy and cfg["training"]["step"] == 40 and len(cfg["training"]["data_hash"]) == 64
    assert cfg["spec"]["obs"]["obs/camera_front"]["shape"] == [SIZE, SIZE, 3] and "torch" in cfg["versions"]
    # the hash names the function: a re-save has the same hash, other weights another one
    ck = load_checkpoint(result.checkpoint)
    kw = dict(policy=policy, config=ck.config, spec=ck.spec, stats=ck.stats)
    save_checkpoint(tmp_path / "copy", weights=ck.weights, training={"step": 1}, **kw)
    assert checkpoint_hash(tmp_path / "copy") == p.checkpoint_hash == result.sha256
    changed = {k: (v + 1 if i == 0 else v) for i, (k, v) in enumerate(ck.weights.items())}
    save_checkpoint(tmp_path / "other", weights=changed, **kw)
    assert checkpoint_hash(tmp_path / "other") != p.checkpoint_hash
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp dirs


def test_spec_mismatch_names_the_difference(trained):
    ckpt = trained["bc"][1].checkpoint
    joints = tiny_profile().robot.joints
    with pytest.raises(SpecError, match="joints differ"):
        load_policy(ckpt, tiny_profile(joints=joints[:5]))
    with pytest.raises(SpecError, match="obs/camera_front: policy expects 24x24x3 uint8, got 32x32x3 uint8"):
        load_policy(ckpt, tiny_profile(size=32))
    with pytest.raises(SpecError, match="missing stream obs/tactile_left_finger"):
        load_policy(ckpt, tiny_profile(tactile=False))
    with pytest.raises(SpecError, match="no policy checkpoint here"):
        load_policy(ckpt.parent.parent)  # above the run dir: no checkpoint


def train_cli(capsys, *argv) -> tuple[int, str]:
    code = main(["train-base", "--no-progress", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


def test_bad_input_exits_2_before_training(store, tmp_path, capsys, trained):
    out = tmp_path / "run"
    code, err = train_cli(capsys, "--store", tmp_path / "nope.zarr", "--policy", "bc", "--out", out)
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1
    keys, attrs = store_layout(tiny_profile())
    Store.create(tmp_path / "empty.zarr", keys=keys, attrs=attrs, durable=False).close()
    code, err = train_cli(capsys, "--store", tmp_path / "empty.zarr", "--policy", "bc", "--out", out)
    assert code == 2 and "no committed episodes" in err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"policy": {"observation": {"keys": ["obs/camera_top", "obs/joint_pos"]}}}))
    code, err = train_cli(capsys, "--store", store, "--policy", "bc", "--out", out, "--config", cfg)
    assert code == 2 and "no stream obs/camera_top" in err
    cfg.write_text(yaml.safe_dump({"train": {"bach_size": 4}}))
    code, err = train_cli(capsys, "--store", store, "--policy", "diffusion", "--out", out, "--config", cfg)
    assert code == 2 and "train.bach_size" in err and "batch_size" in err
    other = make_store(tmp_path / "other.zarr", 2, tiny_profile(size=32))
    code, err = train_cli(capsys, "--store", other, "--resume", trained["bc"][1].out_dir, "--out", out)
    assert code == 2 and "obs/camera_front: policy expects 24x24x3" in err
    code, err = train_cli(capsys, "--store", store, "--policy", "bc", "--out", trained["bc"][1].out_dir)
    assert code == 2 and "already holds a training run" in err
    assert not out.exists()
    with pytest.raises(DatasetError, match="none of its 5 episodes"):
        Trainer(store, "bc", out, policy_cfg=configs("bc")[0], train_cfg=configs("bc", sources=["rollout"])[1])
    with pytest.raises(ConfigError, match="exec_horizon"):
        from_dict(policy_classes("bc")[0], {"pred_horizon": 4, "exec_horizon": 5})


def test_exact_resume(store, tmp_path):
    """N steps in one go == N/2 steps, stop, resume N/2: raw weights, EMA and optimizer identical."""
    torch.set_num_threads(1)
    pc, tc = configs("diffusion", steps=6, log_every=1)
    whole = Trainer(store, "diffusion", tmp_path / "whole", policy_cfg=pc, train_cfg=tc, log=lambda s: None)
    whole.run(progress=False)
    pc, tc = configs("diffusion", steps=6, log_every=1)
    first = Trainer(store, "diffusion", tmp_path / "split", policy_cfg=pc, train_cfg=tc, log=lambda s: None)
    r = first.run(stop_at=3, progress=False)
    assert r.stopped == "stop_at" and r.step == 3 and r.checkpoint.name == "step_0000003"
    second = Trainer(store, None, tmp_path / "split", resume=tmp_path / "split", log=lambda s: None)
    assert second.step == 3
    done = second.run(progress=False)
    assert done.step == 6 and done.stopped == "done"
    for a, b in ((whole.model, second.model), (whole.ema.model, second.ema.model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    sa, sb = whole.opt.state_dict()["state"], second.opt.state_dict()["state"]
    for i in sa:
        torch.testing.assert_close(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"], rtol=0, atol=0)
    assert done.sha256 == checkpoint_hash(tmp_path / "whole" / "final")


@pytest.mark.parametrize("policy", ["bc", "diffusion"])
def test_training_on_a_gpu_matches_the_cpu(store, tmp_path, capsys, policy):
    """Batches and augmentations come from the CPU RNGs on either device, so a few steps on a GPU
    land where the CPU run does (up to float rounding). Without a GPU: asking for one is bad input."""
    if not torch.cuda.is_available():
        code, err = train_cli(capsys, "--store", store, "--policy", policy, "--out", tmp_path / "r", "--device", "cuda")
        assert code == 2 and "train.device: cuda, but torch sees no GPU" in err
        assert not (tmp_path / "r").exists()
        return
    torch.set_num_threads(1)
    runs = {}
    for device in ("cpu", "cuda"):
        pc, tc = configs(policy, steps=4, log_every=1)
        runs[device] = Trainer(store, policy, tmp_path / device, policy_cfg=pc, train_cfg=tc, device=device,
                               log=lambda s: None)
        runs[device].run(progress=False)
    assert next(runs["cuda"].model.parameters()).is_cuda
    sa, sb = runs["cpu"].model.state_dict(), runs["cuda"].model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k].cpu(), rtol=1e-3, atol=1e-4, msg=k)
    loaded = load_checkpoint(tmp_path / "cuda" / "final")  # saved as CPU tensors, loads anywhere
    assert all(not t.is_cuda for t in loaded.weights.values())
