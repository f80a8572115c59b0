"""Policy checkpoints: a directory with `config.json` + `model.safetensors` (+ the training state for
exact resume). No pickle: tensors in safetensors, everything else JSON. Written to a temp dir and
renamed, so a checkpoint directory is always complete.

`checkpoint_hash` identifies the policy *function* (class, architecture, spec, normalizer, weights),
not the run that produced it: re-saving the same weights gives the same hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from robot_rl.atomic import publish_dir
from robot_rl.config.typed import ConfigError, from_dict, to_dict
from robot_rl.policies.registry import policy_classes
from robot_rl.policies.spec import PolicySpec, SpecError

FORMAT = "robot_rl.policy"
FORMAT_VERSION = 1
CONFIG, WEIGHTS = "config.json", "model.safetensors"
TRAIN_JSON, TRAIN_TENSORS = "train_state.json", "train_state.safetensors"
HASHED = ("format", "format_version", "policy", "config", "spec", "normalizer")


class CheckpointError(SpecError):
    """Not a checkpoint, a damaged one, or one of another format version."""


@dataclass
class Checkpoint:
    path: Path
    policy: str  # "bc" | "diffusion"
    config: Any  # the policy config dataclass
    spec: PolicySpec
    stats: dict
    weights: dict[str, torch.Tensor]
    training: dict = field(default_factory=dict)
    train_state: dict | None = None  # train_state.json, if saved
    train_tensors: dict[str, torch.Tensor] | None = None

    def build_model(self):
        model = policy_classes(self.policy)[2](self.config, self.spec, self.stats)
        missing, unexpected = model.load_state_dict(self.weights, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{self.path}: weights do not fit the architecture in {CONFIG} "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()

    @property
    def sha256(self) -> str:
        return checkpoint_hash(self.path)


def versions() -> dict[str, str]:
    import robot_rl

    return {"robot_rl": getattr(robot_rl, "__version__", "0.1.0"), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tensors_digest(h, tensors: Mapping[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def checkpoint_hash(path: str | Path) -> str:
    path = Path(path)
    cfg = _read_config(path)
    h = hashlib.sha256(_canonical({k: cfg[k] for k in HASHED}))
    _tensors_digest(h, load_file(str(path / WEIGHTS)))
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(path: str | Path, *, policy: str, config: Any, spec: PolicySpec, stats: Mapping[str, dict],
                    weights: Mapping[str, torch.Tensor], training: Mapping[str, Any] | None = None,
                    train_state: Mapping[str, Any] | None = None,
                    train_tensors: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write atomically: everything goes into a sibling temp dir that replaces `path` by rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_json(tmp / CONFIG, {"format": FORMAT, "format_version": FORMAT_VERSION, "policy": policy,
                                   "config": to_dict(config), "spec": spec.to_json(), "normalizer": dict(stats),
                                   "training": dict(training or {}), "versions": versions()})
        write_tensors(tmp / WEIGHTS, weights)
        if train_state is not None:
            write_json(tmp / TRAIN_JSON, dict(train_state))
            write_tensors(tmp / TRAIN_TENSORS, train_tensors or {})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, path)


def _read_config(path: Path) -> dict:
    f = path / CONFIG
    if not f.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a policy checkpoint (needs {CONFIG} and {WEIGHTS})")
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({e})") from None
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a {FORMAT} checkpoint (format {cfg.get('format')!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{f}: format version {cfg.get('format_version')} (this robot_rl reads {FORMAT_VERSION})")
    return cfg


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir itself, or a training run dir: its `final`, else its newest periodic one."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if (path / "final" / CONFIG).is_file():
        return path / "final"
    found = sorted((p for p in (path / "checkpoints").glob("step_*") if (p / CONFIG).is_file()), key=lambda p: p.name)
    if found:
        return found[-1]
    raise CheckpointError(f"{path}: no policy checkpoint here (expected {CONFIG} + {WEIGHTS}, "
                          "or a run dir with final/ or checkpoints/step_*)")


def latest_resumable(path: str | Path) -> Path:
    """The most advanced checkpoint with a training state under a run dir (or the dir itself)."""
    path = Path(path)
    candidates = [path] if (path / CONFIG).is_file() else [path / "final", *(path / "checkpoints").glob("step_*")]
    steps = []
    for c in candidates:
        if (c / TRAIN_JSON).is_file() and (c / CONFIG).is_file():
            steps.append((int(json.loads((c / TRAIN_JSON).read_text())["step"]), str(c)))
    if not steps:
        raise CheckpointError(f"{path}: no resumable checkpoint (one with {TRAIN_JSON}) here")
    return Path(max(steps)[1])


def load_checkpoint(path: str | Path, *, train_state: bool = False) -> Checkpoint:
    path = resolve_checkpoint(path)
    cfg = _read_config(path)
    policy = cfg.get("policy")
    try:
        policy_cls = policy_classes(policy)[0]
        config = from_dict(policy_cls, cfg["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from None
    ckpt = Checkpoint(path=path, policy=policy, config=config, spec=PolicySpec.from_json(cfg["spec"]),
                      stats=cfg["normalizer"], weights=load_file(str(path / WEIGHTS)), training=cfg.get("training", {}))
    if train_state:
        if not (path / TRAIN_JSON).is_file():
            raise CheckpointError(f"{path}: has no training state ({TRAIN_JSON}); it cannot be resumed")
        ckpt.train_state = json.loads((path / TRAIN_JSON).read_text())
        ckpt.train_tensors = load_file(str(path / TRAIN_TENSORS))
    return ckpt
