"""`check(path)`: every schema and consistency problem of a store, as readable lines ([] = ok).

Read-only and lock-free, so it can inspect a store while its writer runs (rows of the episode being
written then show up as "beyond the last committed episode").
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import zarr

from robot_rl.data import store_io as io
from robot_rl.data.schema import META_ARRAYS, RESERVED_ATTRS, StoreError, validate_attrs

_BLOCK_BYTES = 64 << 20


def check(path: str | os.PathLike, *, deep: bool = False) -> list[str]:
    """Problems with the store at `path`. `deep` also looks for every committed chunk file, decodes
    every committed row (finds damaged files) and checks that `stamp` increases within each episode."""
    path = Path(path)
    try:
        attrs = io.read_root_attrs(path)
        keys = io.key_specs(path, attrs)
    except StoreError as e:
        return [str(e)]
    problems = [f"{path}: {p}" for p in validate_attrs({k: v for k, v in attrs.items() if k not in RESERVED_ATTRS})]
    zstore = zarr.storage.LocalStore(path, read_only=True)
    data, meta = {}, {}
    for key in keys:
        try:
            data[key] = io.open_all(zstore, path, {key: keys[key]}, writable=False)[0][key]
        except StoreError as e:
            problems.append(str(e))
    for name, dtype in META_ARRAYS.items():
        try:
            arr = io.open_array(zstore, path, io.meta_path(name), False)
        except StoreError as e:
            problems.append(str(e))
            continue
        if dtype != "str" and arr.dtype != np.dtype(dtype):
            problems.append(f"{path}: array 'meta/{name}' is {arr.dtype}, schema v1 says {dtype}")
        meta[name] = arr
    if "episode_ends" not in meta:
        return problems

    raw_ends = np.asarray(meta["episode_ends"][:], dtype=np.int64)
    n = io.committed_prefix(raw_ends)
    ends = raw_ends[:n]
    end = int(ends[-1]) if n else 0
    if len(raw_ends) - n == 1:  # a commit cut between zarr.json and chunk: the protocol's only tail
        problems.append(f"{path}: meta/episode_ends has an uncommitted entry after {n} committed episodes "
                        "(an interrupted commit; repair removes it)")
    elif len(raw_ends) > n:
        problems.append(f"{path}: meta/episode_ends is not positive and strictly increasing at index {n} "
                        f"(value {raw_ends[n]}) and has {len(raw_ends) - n - 1} later entries; they are unreadable")
    for name, arr in [*((io.data_path(k), a) for k, a in data.items()), *((io.meta_path(k), a) for k, a in meta.items())]:
        need = end if name.startswith("data/") else n
        rows = arr.shape[0]
        if rows < need:
            problems.append(f"{path}: array {name!r} has {rows} rows but {need} are committed (data lost)")
        elif rows > need and name != "meta/episode_ends":
            problems.append(f"{path}: array {name!r} has {rows - need} row(s) beyond the last committed episode "
                            "(an interrupted or in-progress write; repair removes them)")
    if n and all(name in meta and meta[name].shape[0] >= n for name in META_ARRAYS):
        problems += _check_meta_values(path, meta, n)
    partials = io.partial_files(path)
    if partials:
        problems.append(f"{path}: {len(partials)} stray temp file(s) from an interrupted write, e.g. "
                        f"{partials[0].relative_to(path)} (repair deletes them)")
    if deep and not problems:
        problems += _check_rows(path, data, ends)
    return problems


def _check_meta_values(path: Path, meta: dict, n: int) -> list[str]:
    problems = []
    labels = meta["episode_source"].attrs.get("labels")
    codes = np.asarray(meta["episode_source"][:n])
    if not isinstance(labels, list) or (len(codes) and int(codes.max()) >= len(labels)):
        problems.append(f"{path}: meta/episode_source has codes without a label (labels: {labels!r})")
    for name in ("episode_start_time", "episode_duration"):
        values = np.asarray(meta[name][:n], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | ((values < 0) if name == "episode_duration" else False))
        if len(bad):
            problems.append(f"{path}: meta/{name} has invalid values at episode(s) {bad[:5].tolist()}")
    for i, text in enumerate(meta["episode_health"][:n]):
        try:
            if not isinstance(json.loads(str(text)), dict):
                raise ValueError("not an object")
        except ValueError as e:
            problems.append(f"{path}: meta/episode_health[{i}] is not a JSON object ({e})")
            break
    return problems


def _check_rows(path: Path, data: dict, ends: np.ndarray) -> list[str]:
    problems = []
    end = int(ends[-1]) if len(ends) else 0
    for key, arr in data.items():
        missing = io.missing_chunks(arr, path, io.data_path(key), end)
        if missing:
            problems.append(f"{path}: data/{key} is missing {len(missing)} chunk file(s) of committed rows, "
                            f"e.g. {missing[0]} (those rows would read as zeros)")
            continue
        block = max(1, _BLOCK_BYTES // max(1, int(np.prod(arr.shape[1:])) * arr.dtype.itemsize))
        for a in range(0, end, block):
            try:
                values = arr[a:min(end, a + block)]
            except Exception as e:  # noqa: BLE001 - any decode failure is a finding
                problems.append(f"{path}: data/{key} rows {a}..{min(end, a + block)} cannot be read: {e}")
                break
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                problems.append(f"{path}: data/{key} has NaN/inf in rows {a}..{min(end, a + block)}")
                break
    if "stamp" in data and end:
        stamp = np.asarray(data["stamp"][:end], dtype=np.float64)
        starts = np.concatenate([[0], ends[:-1]])
        for i, (s, e) in enumerate(zip(starts, ends)):
            if e - s > 1 and not (np.diff(stamp[s:e]) > 0).all():
                problems.append(f"{path}: data/stamp does not increase within episode {i}")
                break
            if not math.isfinite(stamp[s]):
                problems.append(f"{path}: data/stamp is not finite in episode {i}")
                break
    return problems
