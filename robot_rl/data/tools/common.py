"""Shared helpers of the store tools: opening with one-line errors, episode/key lookups, progress."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from robot_rl.data.schema import StoreError
from robot_rl.data.store import Store


class ToolError(Exception):
    """Bad input to a tool (missing episode, missing key, existing output): the CLI prints the
    message as one line and exits with status 2."""


def open_store(path: str | os.PathLike) -> Store:
    """A store opened read-only; StoreError (not a store, damaged) becomes a ToolError."""
    try:
        return Store.open(path, "r")
    except StoreError as e:
        raise ToolError(str(e)) from None


def check_episode(store: Store, episode: int) -> int:
    n = store.n_episodes
    if not -n <= episode < n:
        raise ToolError(f"{store.path}: no episode {episode} (the store has {n} committed episode(s)"
                        + (f", 0..{n - 1})" if n else ")"))
    return episode % n


def require_keys(store: Store, keys: Iterable[str], why: str) -> None:
    missing = [k for k in keys if k not in store.keys]
    if missing:
        raise ToolError(f"{store.path}: no key {', '.join(missing)} ({why}; keys: {', '.join(store.keys)})")


def keys_with_prefix(store: Store, prefix: str) -> dict[str, str]:
    """{short name: key} of keys like obs/camera_<name>, in store order."""
    return {k[len(prefix):]: k for k in store.keys if k.startswith(prefix)}


def camera_keys(store: Store) -> dict[str, str]:
    return {n: k for n, k in keys_with_prefix(store, "obs/camera_").items() if store.keys[k].is_image}


def tactile_keys(store: Store) -> dict[str, str]:
    return keys_with_prefix(store, "obs/tactile_")


def relative_time(store: Store, data: dict[str, np.ndarray]) -> np.ndarray:
    """Seconds from the episode's first step, from the real capture stamps (never step / rate)."""
    if "stamp" not in data:
        raise ToolError(f"{store.path}: no key stamp (the time axis comes from the capture stamps)")
    stamp = data["stamp"].astype(np.float64)
    return stamp - stamp[0]


def fresh_output(path: str | os.PathLike, what: str) -> Path:
    """`path` for a new output directory: refuse to overwrite anything that is there."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ToolError(f"{path}: already exists; {what} writes a new one (remove it or pick another path)")
    return path


def tqdm_bar(total: int, desc: str, unit: str, enabled: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, disable=not enabled)


def iter_blocks(store: Store, episode: int, keys: list[str], block: int = 64):
    """(first step, {key: rows}) in blocks of an episode, so a long episode's frames never sit in
    RAM at once. Store has no public ranged read, so this uses its `_read_rows` (same decoding
    path as `read_episode`)."""
    s = store.episode_slice(episode)
    for a in range(s.start, s.stop, block):
        rows = slice(a, min(s.stop, a + block))
        yield a - s.start, {k: store._read_rows(k, rows) for k in keys}
