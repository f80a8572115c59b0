"""Reward classifier checkpoints: a directory with `config.json` (profile, joints, observation keys with
their per-frame shapes, model config, normalisation statistics, the detector's threshold and M,
training record) and `model.safetensors`. No pickle. Written to a temp dir and published with
`robot_rl.atomic.publish_dir`, like the policy and learner checkpoints.

`load_classifier(path, profile)` refuses a classifier made for another setup with one message that
names each differing field and what to do.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from robot_rl.atomic import publish_dir
from robot_rl.config.typed import ConfigError, from_dict, to_dict
from robot_rl.data.schema import KeySpec
from robot_rl.policies.checkpoint import write_json, write_tensors, versions
from robot_rl.reward.config import RewardModelConfig
from robot_rl.reward.model import RewardClassifier, RewardNet

FORMAT = "robot_rl.reward_classifier"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"


class RewardClassifierError(ValueError):
    """Not a reward classifier, a damaged one, or one made for another setup."""


def save_classifier(path: str | Path, *, net: RewardNet, model_cfg: RewardModelConfig, profile: str,
                    joint_names: list[str], control_rate_hz: float, detector: Mapping[str, Any],
                    training: Mapping[str, Any], metrics: Mapping[str, Any] | None = None) -> Path:
    """Write atomically; `path` must not exist yet (a classifier directory is never overwritten)."""
    path = Path(path)
    if path.exists():
        raise RewardClassifierError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_json(tmp / CONFIG, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "profile": profile,
            "joint_names": list(joint_names), "control_rate_hz": float(control_rate_hz),
            "obs": {k: s.to_json() for k, s in sorted(net.obs.items())},
            "model": to_dict(model_cfg),
            "normalizer": net.normalizer.to_json(),
            "detector": dict(detector), "training": dict(training), "versions": versions()})
        write_tensors(tmp / WEIGHTS, net.state_dict())
        if metrics is not None:
            write_json(tmp / METRICS, dict(metrics))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, path)


def read_config(path: str | Path) -> dict:
    path = Path(path)
    f = path / CONFIG
    if not f.is_file() or not (path / WEIGHTS).is_file():
        raise RewardClassifierError(f"{path} is not a reward classifier (needs {CONFIG} and {WEIGHTS}; "
                                    "make one with robot-rl train-reward)")
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise RewardClassifierError(f"{f}: unreadable ({e})") from None
    if cfg.get("format") != FORMAT:
        raise RewardClassifierError(f"{f}: not a reward classifier (format {cfg.get('format')!r}, "
                                    f"expected {FORMAT!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise RewardClassifierError(f"{f}: format version {cfg.get('format_version')} "
                                    f"(this robot_rl reads {FORMAT_VERSION})")
    return cfg


def profile_differences(cfg: Mapping[str, Any], profile) -> list[str]:
    """Each field in which the classifier's setup and `profile` differ, as 'field: what'."""
    from robot_rl.data.recording import store_layout

    keys, _ = store_layout(profile, record_depth=True)
    out = []
    if cfg["profile"] != profile.name:
        out.append(f"profile: trained for '{cfg['profile']}', this is '{profile.name}'")
    if list(cfg["joint_names"]) != list(profile.robot.joint_names):
        out.append(f"robot.joints: classifier has {cfg['joint_names']}, profile has {profile.robot.joint_names}")
    for key, spec in sorted(cfg["obs"].items()):
        want = KeySpec.from_json(spec)
        have = keys.get(key)
        fmt = lambda s: "x".join(map(str, s.shape)) + f" {s.dtype}"  # noqa: E731
        if have is None:
            out.append(f"obs key {key}: the profile has no such stream "
                       f"(it has {', '.join(k for k in sorted(keys) if k.startswith('obs/'))})")
        elif have.shape != want.shape or have.dtype != want.dtype:
            out.append(f"obs key {key}: classifier expects {fmt(want)}, the profile gives {fmt(have)}")
    return out


def check_profile(cfg: Mapping[str, Any], profile, where: str | Path = "") -> None:
    problems = profile_differences(cfg, profile)
    if problems:
        raise RewardClassifierError(
            f"reward classifier {where} does not fit profile {profile.name}: " + "; ".join(problems)
            + f" -> train one for this setup: robot-rl train-reward --profile {profile.name} "
              "--store STORE_RECORDED_WITH_IT --out DIR")


def load_classifier(path: str | Path, profile=None) -> RewardClassifier:
    """Load (and, given a profile, validate against it) a classifier written by `save_classifier`."""
    path = Path(path)
    cfg = read_config(path)
    if profile is not None:
        check_profile(cfg, profile, path)
    try:
        model_cfg = from_dict(RewardModelConfig, cfg["model"])
        obs = {k: KeySpec.from_json(v) for k, v in cfg["obs"].items()}
        det = cfg["detector"]
        threshold, consecutive, window = float(det["threshold"]), int(det["consecutive"]), int(det["positive_window"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise RewardClassifierError(f"{path / CONFIG}: {e}") from None
    try:
        net = RewardNet(obs, model_cfg, cfg.get("normalizer", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise RewardClassifierError(f"{path / CONFIG}: normalizer: {e}") from None
    weights = load_file(str(path / WEIGHTS))
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RewardClassifierError(f"{path}: weights do not fit the model in {CONFIG} "
                                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
        raise RewardClassifierError(f"{path / WEIGHTS}: non-finite weights")
    return RewardClassifier(net, path=path, profile=cfg["profile"], joint_names=cfg["joint_names"],
                            threshold=threshold, consecutive=consecutive, positive_window=window, config=cfg)
