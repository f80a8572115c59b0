"""Learner checkpoints (exact resume) and the residual-actor weights that go on the wire.

A checkpoint is a directory, written beside its final path and renamed into place:
  model.safetensors  every network (policy = encoder + actor + normalisers, targets, critic)
  optim.safetensors  optimiser state tensors
  rng.safetensors    torch generator states (sampling, update noise, exploration, global CPU/CUDA)
  state.json         config, observation layout, architecture, counters, optimiser hyper-parameters,
                     numpy and python RNG states
safetensors + JSON only: no pickle on disk or on the wire.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save, save_file

from robot_rl.atomic import fsync, publish_dir
from robot_rl.config.typed import from_dict, to_dict
from robot_rl.data.schema import KeySpec
from robot_rl.rl.agent import COUNTERS, ResidualTD3
from robot_rl.rl.config import ResidualRLConfig
from robot_rl.rl.networks import ResidualPolicy, architecture_json

CHECKPOINT_FORMAT = "robot_rl.residual_learner"
CHECKPOINT_VERSION = 1
WEIGHTS_FORMAT = "robot_rl.residual_actor.safetensors/1"


# ---- learner checkpoints -----------------------------------------------------------------------

def _optimizer_state(name: str, opt: torch.optim.Optimizer, tensors: dict) -> dict:
    sd = opt.state_dict()
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _rng_json() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(state), "gauss_next": gauss}}


RESIDUAL_WEIGHTS, RESIDUAL_META = "residual.safetensors", "residual.json"


def resolve_learner_checkpoint(path: str | os.PathLike) -> Path:
    """A learner checkpoint directory from itself or from a learner run dir holding `learner/`."""
    path = Path(path)
    if not (path / "state.json").exists() and (path / "learner").is_dir():
        path = path / "learner"
    return _resolve(path)


def read_residual_weights(path: str | os.PathLike) -> tuple[bytes, dict[str, Any]]:
    """The exported residual of a learner checkpoint (its directory, or a learner run dir holding
    `learner/`), as the (bytes, metadata) a policy node validates like weights from the learner."""
    path = resolve_learner_checkpoint(path)
    if not (path / RESIDUAL_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: no {RESIDUAL_WEIGHTS} (a checkpoint from an older robot_rl?)")
    return (path / RESIDUAL_WEIGHTS).read_bytes(), json.loads((path / RESIDUAL_META).read_text())


def save_checkpoint(agent: ResidualTD3, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the learner's whole state to directory `path` atomically (temp dir, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model = {f"{m}.{k}": v.detach().cpu().contiguous()
                 for m, mod in agent.modules().items() for k, v in mod.state_dict().items()}
        optim: dict[str, torch.Tensor] = {}
        opt_json = {name: _optimizer_state(name, opt, optim) for name, opt in agent.optimizers().items()}
        rng = {f"generator.{k}": g.get_state() for k, g in agent.generators.items()}
        rng["torch.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch.cuda.{i}"] = s
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "torch": torch.__version__,
                 "device_type": agent.device.type,
                 "config": to_dict(agent.cfg), "obs_spec": {k: s.to_json() for k, s in agent.obs_spec.items()},
                 "action_dim": agent.arch["action_dim"], "architecture": agent.arch, "counters": dict(agent.counters),
                 "optimizers": opt_json, "rng": _rng_json(), "extra": dict(extra or {})}
        save_file(model, str(tmp / "model.safetensors"))
        save_file(optim, str(tmp / "optim.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))
        weights, meta = export_actor_weights(agent)  # what a policy node deploys (policy param residual_weights)
        (tmp / RESIDUAL_WEIGHTS).write_bytes(weights)
        (tmp / RESIDUAL_META).write_text(json.dumps(meta))
        for f in tmp.iterdir():
            fsync(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, path)  # a crash between its renames leaves only `.old-*`: load_checkpoint falls back to it
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return path


def _resolve(path: Path) -> Path:
    if (path / "state.json").exists():
        return path
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and (olds[-1] / "state.json").exists():
        return olds[-1]  # interrupted between the two renames of save_checkpoint
    raise FileNotFoundError(f"{path}: no learner checkpoint here (state.json missing)")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None,
                    agent_cls: type[ResidualTD3] = ResidualTD3) -> ResidualTD3:
    """Rebuild the learner exactly as saved: every network (the actor too), targets, optimisers,
    RNG states (also numpy/python/torch global) and counters. Loading on another device kind
    (CUDA checkpoint on a CPU) restores everything but the device generators
    (`agent.resumed_exactly` is then False)."""
    path = _resolve(Path(path))
    state = json.loads((path / "state.json").read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a residual learner checkpoint (format {state.get('format')!r})")
    cfg = from_dict(ResidualRLConfig, state["config"])
    obs_spec = {k: KeySpec(tuple(v["shape"]), v["dtype"]) for k, v in state["obs_spec"].items()}
    agent = agent_cls(cfg, obs_spec, state["action_dim"], device=device)
    if architecture_json(agent.arch) != architecture_json(state["architecture"]):
        raise ValueError(f"{path}: the saved architecture does not match what its config builds")
    model = load_file(str(path / "model.safetensors"))
    for name, mod in agent.modules().items():
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
        mod.load_state_dict(sub, strict=True)
    optim = load_file(str(path / "optim.safetensors"))
    for name, opt in agent.optimizers().items():
        js = state["optimizers"][name]
        st: dict[int, dict] = {}
        for k, v in optim.items():
            opt_name, pid, key = k.split(".", 2)
            if opt_name == name:
                st.setdefault(int(pid), {})[key] = v
        for pid, scalars in js["scalars"].items():
            st.setdefault(int(pid), {}).update(scalars)
        opt.load_state_dict({"state": st, "param_groups": js["param_groups"]})
    rng = load_file(str(path / "rng.safetensors"))
    same_device = state.get("device_type", "cpu") == agent.device.type
    for k, g in agent.generators.items():
        if k == "sample" or same_device:
            g.set_state(rng[f"generator.{k}"])  # CUDA and CPU generator states differ in kind
    agent.resumed_exactly = same_device
    torch.set_rng_state(rng["torch.cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npr, pyr = state["rng"]["numpy"], state["rng"]["python"]
    np.random.set_state((npr["kind"], np.asarray(npr["keys"], dtype=np.uint32), npr["pos"], npr["has_gauss"],
                         npr["cached_gaussian"]))
    random.setstate((pyr["version"], tuple(pyr["state"]), pyr["gauss_next"]))
    agent.counters = {k: int(state["counters"].get(k, 0)) for k in COUNTERS}
    agent.checkpoint_extra = state.get("extra", {})
    return agent


# ---- residual actor weights on the wire ---------------------------------------------------------

class WeightsRejected(ValueError):
    """Received actor weights that must not be loaded; `reason` is one of metadata, architecture,
    checksum, corrupt, keys, shape, dtype, non_finite."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"residual weights rejected ({reason}): {message}")


def export_actor_weights(agent: ResidualTD3) -> tuple[bytes, dict[str, Any]]:
    """The residual policy (encoder + actor + normalisers) as safetensors bytes plus metadata:
    version (monotonic: critic updates so far; the encoder changes with each), step (env steps),
    sha256 of the bytes, architecture (canonical JSON), and the exploration the policy node should
    use with them (uniform during the env warm-up, then truncated Gaussian)."""
    sd = {k: v.detach().cpu().contiguous() for k, v in agent.policy.state_dict().items()}
    data = save(sd)
    meta = {"format": WEIGHTS_FORMAT, "version": agent.critic_updates, "step": agent.env_steps,
            "actor_updates": agent.actor_updates, "sha256": hashlib.sha256(data).hexdigest(),
            "architecture": architecture_json(agent.arch), "exploration": agent.exploration_kind(True),
            "explore_std": agent.cfg.explore_std, "explore_clip": agent.cfg.explore_clip,
            "warmup_noise": agent.cfg.warmup_noise, "explore_hold": agent.cfg.explore_hold}
    return data, meta


@functools.lru_cache(maxsize=8)
def _expected_tensors(arch_json: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    with torch.device("meta"):  # shapes and dtypes only: no allocation, no random init
        sd = ResidualPolicy(json.loads(arch_json)).state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


def _arch_diff(got: Mapping, want: Mapping) -> str:
    fields = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    return ", ".join(f"{k}: got {json.dumps(got.get(k))[:80]}, expected {json.dumps(want.get(k))[:80]}" for k in fields)


def _finite(t: torch.Tensor) -> bool:
    """No NaN or Inf: min and max in one reduction (NaN propagates), no tensor-sized bool mask."""
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def load_actor_weights(data: bytes, metadata: Mapping[str, Any], expected_architecture: Mapping[str, Any] | str,
                       build: Callable[[dict[str, torch.Tensor]], Any] | None = None) -> Any:
    """Validate received weights and return the state_dict for `ResidualPolicy(expected_architecture)`
    (or `build(state_dict)`, which runs while the checksum is still being computed). Raises
    WeightsRejected naming what is wrong; never loads anything partially."""
    if not isinstance(metadata, Mapping) or not all(k in metadata for k in ("sha256", "architecture", "version")):
        raise WeightsRejected("metadata", "metadata must carry sha256, architecture and version")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WeightsRejected("corrupt", f"weights must be bytes, got {type(data).__name__}")
    data = bytes(data)
    want = json.loads(expected_architecture) if isinstance(expected_architecture, str) else dict(expected_architecture)
    try:
        got = metadata["architecture"]
        got = json.loads(got) if isinstance(got, str) else dict(got)
    except (ValueError, TypeError) as e:
        raise WeightsRejected("metadata", f"architecture is not JSON: {e}") from None
    if architecture_json(got) != architecture_json(want):
        raise WeightsRejected("architecture", _arch_diff(got, want))
    checksum = _Sha256(data)  # beside the parsing and building below; a bad checksum still wins as the reason
    try:
        sd = _checked_state_dict(data, want)
        result = build(sd) if build is not None else sd
    except WeightsRejected:
        checksum.verify(metadata["sha256"])
        raise
    checksum.verify(metadata["sha256"])
    return result


class _Sha256:
    """sha256 of a buffer, computed in a thread for large ones: hashlib releases the GIL, so the hash
    (13 ms at 23.6 MB, over half of validating a weights message) overlaps parsing, checking and
    building the policy."""

    THREAD_ABOVE = 4 << 20

    def __init__(self, data: bytes):
        self._digest: str | None = None
        self._thread = None
        if len(data) < self.THREAD_ABOVE:
            self._digest = hashlib.sha256(data).hexdigest()
        else:
            self._thread = threading.Thread(target=self._run, args=(data,), name="weights-sha256", daemon=True)
            self._thread.start()

    def _run(self, data: bytes) -> None:
        h = hashlib.sha256()
        h.update(data)  # update() releases the GIL; Python 3.11's constructor does not
        self._digest = h.hexdigest()

    def verify(self, expected: Any) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._digest != str(expected).lower():
            raise WeightsRejected("checksum", "sha256 of the bytes does not match the metadata")


def _checked_state_dict(data: bytes, want: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    try:
        sd = st_load(data)
    except Exception as e:  # noqa: BLE001 - any parse failure means the bytes are unusable
        raise WeightsRejected("corrupt", f"not a readable safetensors buffer ({type(e).__name__}: {e})") from None
    expected = _expected_tensors(architecture_json(want))
    if set(sd) != set(expected):
        missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
        raise WeightsRejected("keys", f"missing {missing[:5]}, unexpected {extra[:5]}")
    for k, (shape, dtype) in expected.items():
        if tuple(sd[k].shape) != shape:
            raise WeightsRejected("shape", f"{k}: shape {tuple(sd[k].shape)}, expected {shape}")
        if sd[k].dtype != dtype:
            raise WeightsRejected("dtype", f"{k}: dtype {sd[k].dtype}, expected {dtype}")
        if sd[k].is_floating_point() and sd[k].numel() and not _finite(sd[k]):
            raise WeightsRejected("non_finite", f"{k} holds NaN or Inf")
    return sd


def policy_from_weights(data: bytes, metadata: Mapping[str, Any], expected_architecture: Mapping[str, Any] | str,
                        device: str | torch.device = "cpu") -> ResidualPolicy:
    """A ready ResidualPolicy (eval mode) from validated weights: what a policy node calls."""
    want = json.loads(expected_architecture) if isinstance(expected_architecture, str) else expected_architecture

    def build(sd: dict[str, torch.Tensor]) -> ResidualPolicy:
        with torch.device("meta"):  # built without initialising weights that are replaced right away
            policy = ResidualPolicy(want)
        policy.load_state_dict(sd, strict=True, assign=True)  # the validated tensors themselves, no copy
        return policy.to(device).eval()

    return load_actor_weights(data, metadata, want, build)
