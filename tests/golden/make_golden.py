"""Regenerate the golden policy checkpoints and reference outputs (tests/test_policy_golden.py).

    .venv/bin/python tests/golden/make_golden.py

Only run this when a numerical change is intended (and say so in the change): the stored outputs
exist to catch silent changes. Tiny networks, seeded and briefly fitted to synthetic data, pin the
numerics of encoders, normaliser, heads, UNet and DDIM sampler; the tests only load the files.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from robot_rl.config.typed import from_dict  # noqa: E402
from robot_rl.data.schema import KeySpec  # noqa: E402
from robot_rl.policies.checkpoint import checkpoint_hash, save_checkpoint  # noqa: E402
from robot_rl.policies.registry import policy_classes  # noqa: E402
from robot_rl.policies.spec import PolicySpec  # noqa: E402

JOINTS = ["waist", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
LOWER = [-2.6, -1.7, -2.4, -2.0, -2.9, 0.0]
UPPER = [2.6, 1.7, 2.4, 2.0, 2.9, 0.04]
SPEC = PolicySpec(obs={"obs/camera_front": KeySpec((16, 16, 3), "uint8"), "obs/tactile_left_finger": KeySpec((4, 4), "float32"),
                       "obs/joint_pos": KeySpec((6,), "float32")},
                  action_key="action", joint_names=JOINTS, lower=LOWER, upper=UPPER, control_rate_hz=10.0, profile="golden")
COMMON = {"obs_horizon": 2, "pred_horizon": 4, "exec_horizon": 2,
          "observation": {"image": {"resize": 12, "crop": 8, "channels": [4], "blocks": [1], "groups": 2, "keypoints": 2,
                                    "out_dim": 4},
                          "tactile": {"channels": 2, "out_dim": 4}, "proprio": {"hidden": 8, "out_dim": 4}}}
CONFIGS = {"bc": {**COMMON, "hidden": [16]},
           "diffusion": {**COMMON, "down_dims": [4, 8], "n_groups": 2, "kernel_size": 3, "step_embed_dim": 4,
                         "inference_steps": 4}}
SEEDS = [0, 1]  # predict(seed=...) for diffusion
DDIM_STEPS = [1, 4, 10]
EPS_T = [0, 50, 99]


def stats() -> dict:
    q = lambda v: [round(float(x), 4) for x in v]  # noqa: E731 - short decimals keep config.json readable
    return {"action": {"mode": "minmax", "min": q([-1.5, -0.5, -1.0, 0.5, -2.0, 0.0]), "max": q([1.5, 1.2, 1.0, 1.8, 2.0, 0.04]),
                       "mean": [0.0] * 6, "std": [1.0] * 6},
            "obs/joint_pos": {"mode": "minmax", "min": q([-1.4, -0.4, -0.9, 0.6, -1.9, 0.0]),
                              "max": q([1.4, 1.1, 0.9, 1.7, 1.9, 0.04]), "mean": [0.0] * 6, "std": [1.0] * 6},
            "obs/tactile_left_finger": {"mode": "meanstd", "min": [[0.0] * 4] * 4, "max": [[2.0] * 4] * 4,
                                        "mean": [[0.1] * 4] * 4, "std": [[0.3] * 4] * 4}}


def golden_input(rng: np.random.Generator | None = None, n: int = 2) -> dict[str, np.ndarray]:
    """n observation windows (a batch), fixed by a seeded generator."""
    rng = rng or np.random.default_rng(1234)
    return {"obs/camera_front": rng.integers(0, 256, (n, 2, 16, 16, 3), dtype=np.uint8),
            "obs/tactile_left_finger": (rng.random((n, 2, 4, 4)) * 0.5).astype(np.float32),
            "obs/joint_pos": rng.uniform(-1, 1, (n, 2, 6)).astype(np.float32)}


def synthetic_batch(rng: np.random.Generator, n: int = 32) -> dict[str, torch.Tensor]:
    """Chunks that ramp from the current joint positions towards an offset set by the image."""
    obs = golden_input(rng, n)
    q = obs["obs/joint_pos"][:, -1]
    offset = (obs["obs/camera_front"][:, -1].mean(axis=(1, 2)) / 255.0 - 0.5)[:, :1] * np.ones((1, 6), np.float32)
    ramp = np.linspace(0.25, 1.0, 4, dtype=np.float32)[None, :, None]
    action = np.clip(q[:, None] + ramp * offset[:, None], -1.0, 1.0)
    action[..., 5] = 0.02
    out = {k: torch.from_numpy(v) for k, v in obs.items()}
    out["action"] = torch.from_numpy(action.astype(np.float32))
    return out


FIT_STEPS = {"bc": 200, "diffusion": 300}


def fit(model, steps: int) -> None:
    """A short deterministic fit so outputs sit inside the action range (an untrained epsilon model
    drives every DDIM sample into the clip bounds, which would pin nothing)."""
    rng = np.random.default_rng(7)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model.compute_loss(synthetic_batch(rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def main() -> None:
    from robot_rl.policies.policy import load_policy

    torch.set_num_threads(1)
    obs = golden_input()
    tensors = {f"input.{k}": torch.from_numpy(v) for k, v in obs.items()}
    hashes = {}
    for name, cfg in CONFIGS.items():
        pc, _, model_cls = policy_classes(name)
        config = from_dict(pc, cfg)
        torch.manual_seed(0)
        model = model_cls(config, SPEC, stats())
        fit(model, FIT_STEPS[name])
        path = save_checkpoint(HERE / name, policy=name, config=config, spec=SPEC, stats=stats(),
                               weights=model.state_dict(), training={"note": f"golden: {FIT_STEPS[name]} steps on synthetic data"})
        policy = load_policy(path)
        hashes[name] = checkpoint_hash(path)
        tensors[f"{name}.features"] = policy.features(obs)
        if name == "bc":
            tensors["bc.actions"] = torch.from_numpy(policy.predict(obs))
        else:  # the UNet's raw epsilon at fixed noisy chunks pins the network away from the clip range
            x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 4, 6)).astype(np.float32))
            for t in EPS_T:
                with torch.no_grad():
                    tensors[f"diffusion.eps.t{t}"] = policy.model.unet(x, torch.full((2,), t), tensors[f"{name}.features"])
            tensors["diffusion.eps_input"] = x
            for seed in SEEDS:
                for steps in DDIM_STEPS:
                    tensors[f"diffusion.actions.seed{seed}.steps{steps}"] = torch.from_numpy(policy.predict(obs, seed=seed, steps=steps))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "reference.safetensors"))
    (HERE / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    for f in sorted(HERE.rglob("*")):
        if f.is_file():
            print(f"{f.relative_to(HERE)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
