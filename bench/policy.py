"""Base-policy inference latency on CPU: one `predict()` per action chunk (what the policy node
calls), p50/p99 over repeated calls, for BC and for diffusion at several DDIM step counts, with the
default UNet (64/128/256) next to diffusion_policy's reference size (256/512/1024).

Observation: 2 cameras at 96x96 (uint8, resized to the encoder's 84x84 inside), 2 tactile 4x4
grids, 6 joint positions, obs horizon 2. Weights are random (latency does not depend on them).
Prints one JSON line per configuration, e.g.
{"bench": "policy_latency", "policy": "diffusion", "unet": "default", "ddim_steps": 8, "p50_ms": 30.1, ...}
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see robot_rl/cli/train_base.py

UNETS = {"default": None, "reference": [256, 512, 1024]}


def make_policy(policy: str, down_dims, tmp: str, camera: int):
    import numpy as np
    import torch

    from robot_rl.data.schema import KeySpec
    from robot_rl.policies.checkpoint import save_checkpoint
    from robot_rl.policies.policy import load_policy
    from robot_rl.policies.registry import policy_classes
    from robot_rl.policies.spec import PolicySpec

    obs = {"obs/camera_front": KeySpec((camera, camera, 3), "uint8"), "obs/camera_wrist": KeySpec((camera, camera, 3), "uint8"),
           "obs/tactile_left_finger": KeySpec((4, 4), "float32"), "obs/tactile_right_finger": KeySpec((4, 4), "float32"),
           "obs/joint_pos": KeySpec((6,), "float32")}
    spec = PolicySpec(obs, "action", [f"j{i}" for i in range(6)], [-3.0] * 6, [3.0] * 6, 10.0, "bench")
    mm = lambda shape: {"mode": "minmax", "min": np.full(shape, -1.0).tolist(), "max": np.full(shape, 1.0).tolist(),  # noqa: E731
                        "mean": np.zeros(shape).tolist(), "std": np.ones(shape).tolist()}
    stats = {"action": mm(6), "obs/joint_pos": mm(6), "obs/tactile_left_finger": {**mm((4, 4)), "mode": "meanstd"},
             "obs/tactile_right_finger": {**mm((4, 4)), "mode": "meanstd"}}
    cfg_cls, _, model_cls = policy_classes(policy)
    cfg = cfg_cls() if down_dims is None else cfg_cls(down_dims=list(down_dims))
    torch.manual_seed(0)
    model = model_cls(cfg, spec, stats)
    path = save_checkpoint(os.path.join(tmp, f"{policy}-{down_dims}"), policy=policy, config=cfg, spec=spec, stats=stats,
                           weights=model.state_dict())
    return load_policy(path)


def measure(policy, steps, repeats: int, warmup: int = 3) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    window = {k: (rng.integers(0, 256, (policy.obs_horizon, *s), dtype=np.uint8) if len(s) == 3
                  else rng.random((policy.obs_horizon, *s), dtype=np.float32)) for k, s in policy.obs_shapes.items()}
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        policy.predict(window, seed=i, steps=steps)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--camera", type=int, default=96, help="camera frame side (pixels)")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8, 10, 16], help="DDIM step counts (8 = default)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    common = {"bench": "policy_latency", "threads": args.threads, "cameras": f"2x{args.camera}x{args.camera}",
              "tactile": "2x4x4", "proprio": 6, "load_avg_1m": round(load, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        bc = make_policy("bc", None, tmp, args.camera)
        print(json.dumps({**common, "policy": "bc", "params_m": _params(bc), "pred_horizon": bc.pred_horizon,
                          **measure(bc, None, args.repeats)}), flush=True)
        for unet, dims in UNETS.items():
            p = make_policy("diffusion", dims, tmp, args.camera)
            for steps in args.steps:
                print(json.dumps({**common, "policy": "diffusion", "unet": unet, "down_dims": p.config.down_dims,
                                  "ddim_steps": steps, "default_steps": p.config.inference_steps,
                                  "params_m": _params(p), **measure(p, steps, args.repeats)}), flush=True)
    return 0


def _params(policy) -> float:
    return round(sum(x.numel() for x in policy.model.parameters()) / 1e6, 2)


if __name__ == "__main__":
    raise SystemExit(main())
