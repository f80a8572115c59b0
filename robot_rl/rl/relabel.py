"""Demo relabelling: the frozen base's action at every demo frame, cached per base checkpoint.

A demo's stored action stays the human one; the residual learner needs what the *base* would have
done there (the actor's input, and the residual target action - base_action). Running a diffusion
base over every demo frame is slow, so results are cached as safetensors keyed by the base
checkpoint's hash, next to the store: `<store>/../<store-name>.base_actions/<hash>.safetensors`.
The same machinery computes the base's encoder features at chunk starts (`tag="features"`, held for
the chunk, for every episode) when the residual takes them as an input.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from robot_rl.data.store import Store
from robot_rl.rl.decisions import chunk_phases, decision_starts

BaseActionFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]
_HASH_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass
class RelabelStats:
    hits: int = 0  # episodes served from the cache
    misses: int = 0  # episodes run through the base
    frames: int = 0  # frames run through the base (chunk starts only for a chunked base)
    cache_path: Path | None = None
    hit_episodes: list[int] = field(default_factory=list)


def cache_path(store_path: str | os.PathLike, base_hash: str, cache_dir: str | os.PathLike | None = None,
               obs_horizon: int = 1, tag: str = "") -> Path:
    if not _HASH_RE.match(base_hash or ""):
        raise ValueError(f"base checkpoint hash {base_hash!r} is not usable as a file name "
                         "(letters, digits, '_', '-', '.'; at most 128)")
    store_path = Path(store_path)
    folder = Path(cache_dir) if cache_dir else store_path.parent / f"{store_path.name}.base_actions"
    suffix = (f".h{obs_horizon}" if obs_horizon > 1 else "") + (f".{tag}" if tag else "")
    return folder / f"{base_hash}{suffix}.safetensors"


def _read_cache(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.exists():
        return {}, {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("episodes", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception:  # noqa: BLE001 - a damaged cache is only a cache: recompute everything
        return {}, {}


def _write_cache(path: Path, tensors: dict[str, np.ndarray], episodes: dict, base_hash: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
                  metadata={"base_hash": base_hash, "episodes": json.dumps(episodes)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _history_index(T: int, horizon: int) -> np.ndarray:
    """(T, horizon) frame indices ending at each step, edge-padded at the episode start."""
    return np.clip(np.arange(T)[:, None] + np.arange(1 - horizon, 1)[None, :], 0, T - 1)


def _call(episode_obs, base_action_fn, frames: np.ndarray, hist: np.ndarray | None) -> np.ndarray:
    index = frames if hist is None else hist[frames]
    a = np.asarray(base_action_fn({k: v[index] for k, v in episode_obs.items()}), dtype=np.float32)
    if a.ndim not in (2, 3) or a.shape[0] != len(frames):
        raise ValueError(f"base_action_fn returned shape {a.shape} for a batch of {len(frames)} "
                         "(expected (B, n) actions or (B, horizon, n) chunks)")
    if not np.isfinite(a).all():
        raise ValueError("base_action_fn returned non-finite actions")
    return a


def run_base(episode_obs: Mapping[str, np.ndarray], base_action_fn: BaseActionFn, *, obs_horizon: int = 1,
             chunk_length: int = 1, batch_size: int = 256, hold: bool = False,
             phase: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """The base's action at every frame of one episode: ((T, n) float32, frames run, chunk used).

    If base_action_fn returns chunks (B, horizon, n), the base is queried only at chunk starts
    (t mod chunk_length == 0) and frame t gets element t mod chunk_length of its chunk: exactly
    what the policy node executes open loop, and chunk_length times fewer base calls. If it returns
    (B, n), every frame is queried (chunk used = 1) unless `hold`: then only chunk starts are, and
    frame t gets its chunk start's row (the base's features when it planned the chunk); `phase` (a
    rollout's recorded chunk phases) puts those starts where the policy node's chunks really began."""
    T = len(next(iter(episode_obs.values())))
    hist = _history_index(T, obs_horizon) if obs_horizon > 1 else None
    starts = np.arange(0, T, chunk_length)
    if hold and phase is not None:
        starts = decision_starts(chunk_phases(phase, T, chunk_length))
    first = _call(episode_obs, base_action_fn, starts[:batch_size], hist)
    if first.ndim == 2 and hold:
        rows = np.concatenate([first] + [_call(episode_obs, base_action_fn, starts[lo:lo + batch_size], hist)
                                         for lo in range(batch_size, len(starts), batch_size)])
        return rows[np.searchsorted(starts, np.arange(T), side="right") - 1], len(starts), chunk_length
    if first.ndim == 3:
        if first.shape[1] < min(chunk_length, T):
            raise ValueError(f"base chunks of {first.shape[1]} steps are shorter than chunk_length {chunk_length}")
        chunks = [first] + [_call(episode_obs, base_action_fn, starts[lo:lo + batch_size], hist)
                            for lo in range(batch_size, len(starts), batch_size)]
        chunk = np.concatenate(chunks)  # (n_starts, horizon, n)
        t = np.arange(T)
        return chunk[t // chunk_length, t % chunk_length], len(starts), chunk_length
    out = np.empty((T, first.shape[1]), np.float32)
    done = starts[:batch_size]
    out[done] = first
    rest = np.setdiff1d(np.arange(T), done)
    for lo in range(0, len(rest), batch_size):
        out[rest[lo:lo + batch_size]] = _call(episode_obs, base_action_fn, rest[lo:lo + batch_size], hist)
    return out, T, 1


def relabel_episodes(store: Store, episodes: Sequence[int], base_action_fn: BaseActionFn, base_hash: str, *,
                     cache_dir: str | os.PathLike | None = None, obs_horizon: int = 1, chunk_length: int = 1,
                     obs_keys: Sequence[str] | None = None, tag: str = "", hold: bool = False,
                     cache: bool = True, phases: Mapping[int, np.ndarray] | None = None
                     ) -> tuple[dict[int, np.ndarray], RelabelStats]:
    """{episode: (T, n) base actions} for the given store episodes, from the cache where it holds
    them (same episode length, start time and chunking) and from `base_action_fn` otherwise; new
    results are written back (atomically) before returning. `tag` names a separate cache file (e.g.
    "features"); `hold` is run_base's; `cache=False` computes without reading or writing one (the
    file is rewritten whole, so it is for demos, not for a session's growing rollouts); `phases`:
    recorded chunk phases per episode for `hold` (uncached rollouts only)."""
    if phases is not None and cache:
        raise ValueError("recorded phases change where chunks start: relabel with them only uncached (cache=False)")
    path = cache_path(store.path, base_hash, cache_dir, obs_horizon, tag)
    stats = RelabelStats(cache_path=path if cache else None)
    tensors, index = _read_cache(path) if cache else ({}, {})
    meta = {m["index"]: m for m in store.episodes_meta()}
    keys = list(obs_keys) if obs_keys is not None else [k for k in store.keys if k.startswith("obs/")]
    out: dict[int, np.ndarray] = {}
    dirty = False
    for ep in episodes:
        name, m = f"episode_{ep:06d}", meta[ep]
        cached, ident = tensors.get(name), index.get(name)
        if (cached is not None and ident is not None and ident[:2] == [m["length"], m["start_time"]]
                and ident[2] in (1, chunk_length) and cached.shape[0] == m["length"]):
            out[ep] = cached.astype(np.float32)
            stats.hits += 1
            stats.hit_episodes.append(ep)
            continue
        obs = store.load(keys, episodes=[ep])
        obs.pop("episode_ends")
        out[ep], frames, used = run_base(obs, base_action_fn, obs_horizon=obs_horizon, chunk_length=chunk_length,
                                         hold=hold, phase=None if phases is None else phases.get(ep))
        tensors[name], index[name] = out[ep], [m["length"], m["start_time"], used]
        stats.misses += 1
        stats.frames += frames
        dirty = True
    if dirty and cache:
        _write_cache(path, tensors, index, base_hash)
    return out, stats
