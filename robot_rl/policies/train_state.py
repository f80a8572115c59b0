"""Training state <-> (JSON, safetensors) for exact resume: raw weights, optimizer moments, EMA step,
torch and numpy RNG states, step counter. No pickle: optimizer tensors are flattened by name."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robot_rl.policies.ema import EMA


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}, tensors


def optimizer_from_flat(opt: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def capture(step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, ema: EMA | None,
            rng: np.random.Generator, extra: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    opt_meta, tensors = optimizer_to_flat(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": step, "optimizer": opt_meta, "ema_step": ema.step if ema else None,
            "numpy_rng": rng.bit_generator.state, **extra}
    return meta, tensors


def restore(meta: dict, tensors: dict[str, torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer,
            ema: EMA | None, ema_weights: dict[str, torch.Tensor] | None, rng: np.random.Generator) -> int:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_flat(opt, meta["optimizer"], tensors)
    if ema is not None:
        ema.model.load_state_dict(ema_weights if ema_weights is not None else model.state_dict())
        ema.step = int(meta.get("ema_step") or 0)
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = meta["numpy_rng"]
    return int(meta["step"])
