"""Store schema v1: key specs, root attributes, array layout (chunks, codecs) and input validation.

Everything here is pure description; `store.py` does the IO. Kept separate so `check()` and the
writer agree on one definition of what a valid store and a valid episode look like.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from zarr.codecs import BloscCodec

from robot_rl.config.typed import ConfigError, check, from_dict

SCHEMA_VERSION = 1
DATA_GROUP = "data"
META_GROUP = "meta"
WRITER_LOCK_NAME = ".writer.lock"
RESERVED_ATTRS = ("schema_version", "keys")

# One low-dim chunk holds about this many uncompressed bytes (diffusion_policy uses ~2 MB): big
# enough for fast bulk loads, small enough that rewriting the open chunk on every flush stays cheap.
LOWDIM_CHUNK_BYTES = 1 << 20
META_CHUNK_ROWS = 4096
# Flat chunk file names ("c.17.0.0.0") instead of zarr's default nested directories: one frame
# per chunk would otherwise create three directory levels per frame.
CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}

# meta/<name> -> dtype ("str" = zarr v3 variable-length UTF-8; fixed-width strings raise
# UnstableSpecificationWarning in zarr 3.1.6, so they are avoided).
META_ARRAYS: dict[str, str] = {
    "episode_ends": "int64",  # cumulative; THE commit marker, written last
    "episode_source": "uint8",  # code into the `labels` attribute of that array
    "episode_success": "bool",
    "episode_start_time": "float64",
    "episode_duration": "float64",
    "episode_base_ckpt": "str",
    "episode_health": "str",  # one JSON object per episode
}
DEFAULT_SOURCE_LABELS = ["demo", "rollout", "intervention"]

KEY_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)*$")
LABEL_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class StoreError(Exception):
    """A store cannot be opened, read or written as asked; the message says which store and why."""


@dataclass(frozen=True)
class KeySpec:
    """Per-step shape and dtype of one data key (the stored array is (T, *shape))."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        dt = np.dtype(self.dtype)
        if dt.kind not in "biuf":
            raise StoreError(f"dtype {dt} is not storable as data (use bool, integer or float arrays)")
        if any(s <= 0 for s in self.shape):
            raise StoreError(f"per-step shape {self.shape} must have positive sizes")
        object.__setattr__(self, "dtype", dt.name)

    @property
    def is_image(self) -> bool:
        """uint8 H×W×C frames: chunked one frame per chunk for random access."""
        return self.dtype == "uint8" and len(self.shape) == 3

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, value: Any) -> "KeySpec":
        return cls(tuple(value["shape"]), value["dtype"])


def chunk_rows(spec: KeySpec) -> int:
    if spec.is_image:
        return 1
    return max(1, LOWDIM_CHUNK_BYTES // max(1, spec.row_bytes))


def data_layout(spec: KeySpec) -> dict[str, Any]:
    """zarr create_array arguments for a data key. Frames: zstd level 1 (~25 % smaller than lz4 on
    noisy camera frames at ~0.4 ms/frame). Low-dim: lz4 + byte shuffle (same ratio as zstd on
    float signals, ~10x faster; the open chunk is recompressed on every flush)."""
    if spec.is_image:
        codec = BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")
    else:
        shuffle = "shuffle" if np.dtype(spec.dtype).itemsize > 1 else "noshuffle"
        codec = BloscCodec(cname="lz4", clevel=5, shuffle=shuffle)
    return {
        "shape": (0, *spec.shape),
        "chunks": (chunk_rows(spec), *spec.shape),
        "dtype": spec.dtype,
        "compressors": codec,
        "chunk_key_encoding": CHUNK_KEY_ENCODING,
    }


def meta_layout(name: str) -> dict[str, Any]:
    dtype = META_ARRAYS[name]
    layout: dict[str, Any] = {
        "shape": (0,),
        "chunks": (META_CHUNK_ROWS,),
        "dtype": str if dtype == "str" else dtype,
        "chunk_key_encoding": CHUNK_KEY_ENCODING,
    }
    if dtype != "str":
        layout["compressors"] = BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
    if name == "episode_source":
        layout["attributes"] = {"labels": list(DEFAULT_SOURCE_LABELS)}
    return layout


# ---- root attributes (validated with the project's typed config system) ----


@dataclass
class StreamInfo:
    name: str
    shape: list[int]
    dtype: str
    rate_hz: float

    def validate(self) -> None:
        check(self.rate_hz > 0, f"must be positive, got {self.rate_hz}", "rate_hz")


@dataclass
class ActionInfo:
    joint_names: list[str]
    lower: list[float]
    upper: list[float]

    def validate(self) -> None:
        n = len(self.joint_names)
        check(len(self.lower) == n and len(self.upper) == n,
              f"joint_names, lower and upper must have the same length ({n}, {len(self.lower)}, {len(self.upper)})")
        bad = [j for j, lo, hi in zip(self.joint_names, self.lower, self.upper) if not lo < hi]
        check(not bad, f"lower must be below upper for joint(s) {', '.join(bad)}", "lower")


@dataclass
class StoreAttrs:
    """The attributes every store carries; other JSON attributes are kept as given."""

    control_rate_hz: float
    profile: dict[str, Any] = field(default_factory=dict)
    streams: list[StreamInfo] = field(default_factory=list)
    action: ActionInfo | None = None

    def validate(self) -> None:
        check(self.control_rate_hz > 0 and math.isfinite(self.control_rate_hz),
              f"must be a positive number, got {self.control_rate_hz}", "control_rate_hz")


def validate_attrs(attrs: Mapping[str, Any]) -> list[str]:
    """Problems with the user part of the root attributes ([] = fine)."""
    known = {f for f in StoreAttrs.__dataclass_fields__}
    try:
        from_dict(StoreAttrs, {k: v for k, v in attrs.items() if k in known}, "attrs")
    except ConfigError as e:
        return [str(e)]
    try:
        json.dumps(dict(attrs), allow_nan=False)
    except (TypeError, ValueError) as e:
        return [f"attrs must be plain JSON data: {e}"]
    return []


def validate_key_specs(keys: Mapping[str, KeySpec]) -> None:
    if not keys:
        raise StoreError("a store needs at least one data key")
    for name, spec in keys.items():
        if not KEY_RE.match(name):
            raise StoreError(f"key {name!r} must be lower_snake_case segments joined by '/' (e.g. obs/camera_front)")
        if name == "episode_ends":
            raise StoreError("key 'episode_ends' is reserved (load() returns it)")
        if not isinstance(spec, KeySpec):
            raise StoreError(f"key {name!r}: expected a KeySpec, got {type(spec).__name__}")
        for other in keys:
            if other.startswith(name + "/"):
                raise StoreError(f"key {name!r} cannot also be a prefix of key {other!r}")


# ---- input validation (the writer's gate: nothing reaches disk unless it fits the schema) ----


def storable(src: np.dtype, dst: np.dtype) -> bool:
    """Float targets accept same-kind narrowing (f64 -> f32 is the store's precision); integer and
    bool targets only lossless casts, so float images or int16 values cannot wrap silently."""
    if dst.kind == "f":
        return np.can_cast(src, dst, "same_kind")
    return np.can_cast(src, dst, "safe")


def check_value(key: str, spec: KeySpec, value: Any, *, per_episode: bool) -> np.ndarray:
    """`value` as an array of the key's dtype: shape (T, *spec.shape) for a whole episode, or
    spec.shape for one step. Raises StoreError naming the key on a wrong shape or lossy dtype."""
    arr = np.asarray(value)
    if per_episode:
        ok = arr.ndim == len(spec.shape) + 1 and arr.shape[1:] == spec.shape
        expect = f"(T, {', '.join(map(str, spec.shape))})".replace(", )", ")")
    else:
        ok = arr.shape == spec.shape
        expect = str(spec.shape)
    if not ok:
        raise StoreError(f"key {key!r}: shape {arr.shape} does not match the store's {expect}")
    dst = np.dtype(spec.dtype)
    if arr.dtype != dst:
        if not storable(arr.dtype, dst):
            raise StoreError(f"key {key!r}: dtype {arr.dtype} cannot be stored as {dst} without loss; convert it explicitly")
        arr = arr.astype(dst)
    return arr


def check_keys(given: Mapping[str, Any], keys: Mapping[str, KeySpec]) -> None:
    missing = [k for k in keys if k not in given]
    extra = [k for k in given if k not in keys]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown key(s) {', '.join(map(str, extra))} (store keys: {', '.join(keys)})")
        raise StoreError("; ".join(parts))


def encode_health(health: Any) -> str:
    try:
        return json.dumps(health if health is not None else {}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"health must be plain JSON data (no NaN/inf): {e}") from None


def check_label(source: str) -> None:
    if not isinstance(source, str) or not LABEL_RE.match(source):
        raise StoreError(f"episode source {source!r} must be a lower_snake_case name like 'demo' or 'rollout'")
