"""Tiny, randomly initialised BC and diffusion checkpoints with a profile's observation spec
(fast to build; used where a test needs a real checkpoint in a node, not a trained one)."""
from pathlib import Path

import numpy as np
import torch

from robot_rl.config.typed import from_dict
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import open_or_create, store_layout
from robot_rl.data.schema import KeySpec
from robot_rl.policies.checkpoint import save_checkpoint
from robot_rl.policies.registry import policy_classes
from robot_rl.policies.spec import PolicySpec


def tiny_checkpoints(root: Path, profile) -> dict[str, Path]:
    n = len(profile.robot.joints)
    cam = profile.cameras[0]
    tac = profile.tactile[0]
    spec = PolicySpec(obs={f"obs/camera_{cam.name}": KeySpec((cam.height, cam.width, 3), "uint8"),
                           f"obs/tactile_{tac.name}": KeySpec((tac.rows, tac.cols), "float32"),
                           "obs/joint_pos": KeySpec((n,), "float32")},
                      action_key="action", joint_names=profile.robot.joint_names,
                      lower=[j.lower for j in profile.robot.joints], upper=[j.upper for j in profile.robot.joints],
                      control_rate_hz=profile.robot.control_rate_hz, profile=profile.name)
    ranges = {"mode": "minmax", "min": [j.lower for j in profile.robot.joints],
              "max": [j.upper for j in profile.robot.joints], "mean": [0.0] * n, "std": [1.0] * n}
    stats = {"action": ranges, "obs/joint_pos": ranges,
             f"obs/tactile_{tac.name}": {"mode": "meanstd", "min": [[0.0] * tac.cols] * tac.rows,
                                         "max": [[5.0] * tac.cols] * tac.rows, "mean": [[0.1] * tac.cols] * tac.rows,
                                         "std": [[0.5] * tac.cols] * tac.rows}}
    common = {"obs_horizon": 2, "pred_horizon": 4, "exec_horizon": 3,
              "observation": {"image": {"resize": 12, "crop": 8, "channels": [4], "blocks": [1], "groups": 2,
                                        "keypoints": 2, "out_dim": 4},
                              "tactile": {"channels": 2, "out_dim": 4}, "proprio": {"hidden": 8, "out_dim": 4}}}
    configs = {"bc": {**common, "hidden": [16]},
               "diffusion": {**common, "down_dims": [4, 8], "n_groups": 2, "kernel_size": 3, "step_embed_dim": 4,
                             "inference_steps": 4}}
    out = {}
    for name, cfg in configs.items():
        policy_config_cls, _, model_cls = policy_classes(name)
        config = from_dict(policy_config_cls, cfg)
        torch.manual_seed(0)
        model = model_cls(config, spec, stats)
        out[name] = save_checkpoint(root / name, policy=name, config=config, spec=spec, stats=stats,
                                    weights=model.state_dict(), training={"note": "tiny test checkpoint"})
    return out


def write_episodes(profile, path, source: str, n: int, steps: int = 20, seed: int = 0) -> None:
    """n synthetic episodes of the profile's store layout (for learner and residual tests)."""
    keys, _ = store_layout(profile)
    rng = np.random.default_rng(seed)
    store = open_or_create(path, profile)
    writer = EpisodeWriter(store, background=False)
    for e in range(n):
        writer.begin(source=source)
        for t in range(steps):
            step = {}
            for k, spec in keys.items():
                if spec.dtype == "uint8":
                    step[k] = rng.integers(0, 255, spec.shape, dtype=np.uint8)
                elif spec.dtype == "bool":
                    step[k] = False
                elif k == "stamp":
                    step[k] = 1000.0 * seed + 10.0 * e + 0.1 * t
                elif k == "reward":
                    step[k] = 1.0 if t == steps - 1 and e % 2 == 0 else 0.0
                elif k == "chunk_phase":
                    step[k] = np.int16(-1)  # no recorded phase: chunks back to back
                else:
                    step[k] = rng.uniform(-0.5, 0.5, spec.shape).astype(spec.dtype)
            writer.add_step(step)
        writer.commit(success=e % 2 == 0, health={"ok": True})
    writer.close()
    store.close()
