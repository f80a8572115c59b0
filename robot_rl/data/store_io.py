"""Low-level zarr access shared by Store, repair() and check(): open with clear errors, find the
committed prefix, truncate, sync.

zarr 3.1.6 facts this relies on (checked against its source):
- LocalStore writes every file (chunk or zarr.json) to `<name>.<uuid>.partial` then renames it, so a
  killed writer leaves either the old or the new file, plus at worst a stray `.partial` file.
- `Array.append` / `resize` write the new shape (zarr.json) *before* the chunks; a crash in
  between leaves rows that read as the fill value. That holds for `meta/episode_ends` too, so the
  committed count is the longest strictly increasing positive prefix, not the array's length.
- Shrinking `resize` deletes the chunks wholly outside the new shape and keeps partly covered ones.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from pathlib import Path

import numpy as np
import zarr
from zarr.errors import BaseZarrError, NodeNotFoundError

from robot_rl.data.schema import DATA_GROUP, META_ARRAYS, META_GROUP, SCHEMA_VERSION, KeySpec, StoreError


def data_path(key: str) -> str:
    return f"{DATA_GROUP}/{key}"


def meta_path(name: str) -> str:
    return f"{META_GROUP}/{name}"


def read_root_attrs(path: Path) -> dict:
    """Root attributes after checking that `path` is a robot_rl store of the supported version."""
    if not path.exists():
        raise StoreError(f"{path}: no such store (the path does not exist)")
    if not path.is_dir():
        raise StoreError(f"{path}: not a store (it is a file, a store is a directory)")
    root_json = path / "zarr.json"
    if not root_json.is_file():
        hint = " (it looks like a zarr v2 store; schema v1 needs zarr v3)" if (path / ".zgroup").exists() else ""
        raise StoreError(f"{path}: not a store (no zarr.json){hint}")
    try:
        meta = json.loads(root_json.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a store (unreadable zarr.json: {e})") from None
    if not isinstance(meta, dict) or meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        raise StoreError(f"{path}: not a store (zarr.json is not a zarr v3 group)")
    attrs = meta.get("attributes") or {}
    version = attrs.get("schema_version")
    if version is None:
        raise StoreError(f"{path}: not a robot_rl store (no schema_version attribute)")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: store schema version {version!r} is not supported (this robot_rl reads version {SCHEMA_VERSION})")
    if not isinstance(attrs.get("keys"), dict):
        raise StoreError(f"{path}: not a valid store (attribute 'keys' is missing)")
    return attrs


def key_specs(path: Path, attrs: dict) -> dict[str, KeySpec]:
    try:
        return {k: KeySpec.from_json(v) for k, v in attrs["keys"].items()}
    except (KeyError, TypeError, ValueError, StoreError) as e:
        raise StoreError(f"{path}: invalid 'keys' attribute: {e}") from None


def open_array(zstore: zarr.storage.LocalStore, path: Path, name: str, writable: bool) -> zarr.Array:
    try:
        # write_empty_chunks: every committed row has a chunk file, so a missing file is damage
        # check() can see (zarr would otherwise read it silently as zeros).
        # zarr 3.1.6 ignores open_array(config=...): with_config is what takes effect.
        array = zarr.open_array(zstore, path=name, mode="r+" if writable else "r")
        return array.with_config({"write_empty_chunks": True})
    except (NodeNotFoundError, FileNotFoundError):
        raise StoreError(f"{path}: store is missing array {name!r}") from None
    except (BaseZarrError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path}: array {name!r} is unreadable: {e}") from None


def open_all(zstore, path: Path, keys: dict[str, KeySpec], writable: bool):
    """(data arrays by key, meta arrays by name), checking each data array against its KeySpec."""
    data = {}
    for key, spec in keys.items():
        arr = open_array(zstore, path, data_path(key), writable)
        if tuple(arr.shape[1:]) != spec.shape or arr.dtype != np.dtype(spec.dtype):
            raise StoreError(f"{path}: array {data_path(key)!r} is {arr.dtype}{tuple(arr.shape[1:])} per step, "
                             f"the schema says {spec.dtype}{spec.shape}")
        data[key] = arr
    meta = {name: open_array(zstore, path, meta_path(name), writable) for name in META_ARRAYS}
    return data, meta


def committed_prefix(ends: np.ndarray) -> int:
    """Number of committed episodes: entries must be positive and strictly increasing; a tail
    entry that is not (a commit cut between zarr.json and chunk write reads 0) is not committed."""
    n = len(ends)
    if n == 0:
        return 0
    ok = np.empty(n, dtype=bool)
    ok[0] = ends[0] > 0
    ok[1:] = ends[1:] > ends[:-1]
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else n


def read_committed_ends(ends_array: zarr.Array) -> np.ndarray:
    ends = np.asarray(ends_array[:], dtype=np.int64)
    return ends[: committed_prefix(ends)].copy()


def truncate(arr: zarr.Array, rows: int) -> int:
    """Shrink `arr` to `rows` rows; returns how many rows were removed (0 if none)."""
    extra = arr.shape[0] - rows
    if extra > 0:
        arr.resize((rows, *arr.shape[1:]))
    return max(0, extra)


def missing_chunks(arr: zarr.Array, path: Path, name: str, rows: int) -> list[str]:
    """Chunk files that should hold rows [0, rows) of `arr` but do not exist."""
    per = arr.chunks[0]
    tail = (0,) * (arr.ndim - 1)
    files = (path / name / arr.metadata.encode_chunk_key((i, *tail)) for i in range(-(-rows // per)))
    return [str(f.relative_to(path)) for f in files if not f.is_file()]


def partial_files(path: Path) -> list[Path]:
    """Temp files of zarr's atomic writes left behind by a killed writer."""
    return [Path(d) / f for d, _, files in os.walk(path) for f in files if f.endswith(".partial")]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush the store's filesystem (syncfs; os.sync where unavailable): orders data before the
    commit marker on disk, so a power cut, not just a killed process, also loses at most one episode."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if getattr(_libc, "syncfs", None) is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
