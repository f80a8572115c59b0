"""The demonstration/rollout store (schema v1, DESIGN.md §5): zarr v3 on a local directory.

Readers trust only `meta/episode_ends`; the one writer appends data rows first, then the meta rows,
then the episode's end (the commit marker). A writer killed at any moment loses at most the open
episode: opening for writing truncates whatever lies beyond the last committed end.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import zarr

from robot_rl.data import store_io as io
from robot_rl.data.frame_reader import read_frames
from robot_rl.data.lock import WriterLock
from robot_rl.data.schema import (
    DEFAULT_SOURCE_LABELS, RESERVED_ATTRS, SCHEMA_VERSION, KeySpec, StoreError, check_keys, check_label,
    check_value, data_layout, encode_health, meta_layout, validate_attrs, validate_key_specs,
)
from robot_rl.data.store_check import check  # noqa: F401  (part of this module's API)


class Store:
    """One open store. Mode "r": any number of readers, `refresh()` sees newly committed episodes.
    Mode "a": the single writer (holds `.writer.lock`)."""

    def __init__(self, path: Path, mode: str, zstore, attrs: dict, keys: dict[str, KeySpec],
                 data: dict[str, zarr.Array], meta: dict[str, zarr.Array], lock: WriterLock | None, durable: bool):
        self.path, self.mode, self.attrs, self.keys = path, mode, attrs, keys
        self._zstore, self._data, self._meta, self._lock, self._durable = zstore, data, meta, lock, durable
        self._io = threading.RLock()  # one writer object may be driven from several threads
        self._ends = io.read_committed_ends(meta["episode_ends"])
        self._labels = list(meta["episode_source"].attrs.get("labels", DEFAULT_SOURCE_LABELS))
        self._episode_open = False  # rows of an uncommitted episode may sit beyond n_steps
        self._needs_truncate = False  # a failed rollback left rows beyond n_steps
        self.recovered: dict[str, int] = {}  # rows the opening writer truncated (from a crash)
        # Called as (phase, episode) with phase "rows_written", "meta_written", "committed": lets
        # diagnostics time a commit and crash tests kill the writer at an exact point.
        self.on_commit_phase: Callable[[str, int], None] | None = None
        self._sync_handles()

    # ---- opening ----

    @classmethod
    def create(cls, path: str | os.PathLike, *, keys: Mapping[str, KeySpec], attrs: Mapping[str, Any],
               durable: bool = True) -> "Store":
        """A new empty store, returned open for writing. Built in a temp dir and renamed into place,
        so a crash during creation never leaves a half-made store under `path`."""
        path = Path(path)
        keys = dict(keys)
        validate_key_specs(keys)
        taken = [k for k in RESERVED_ATTRS if k in attrs]
        if taken:
            raise StoreError(f"attrs {', '.join(taken)} are set by the store itself")
        problems = validate_attrs(attrs)
        if problems:
            raise StoreError(f"{path}: {problems[0]}")
        if path.exists():
            raise StoreError(f"{path}: already exists (open it with Store.open(path, 'a') to append)")
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        root_attrs = {"schema_version": SCHEMA_VERSION, "keys": {k: s.to_json() for k, s in keys.items()}, **attrs}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            root = zarr.create_group(zarr.storage.LocalStore(tmp), attributes=root_attrs)
            for key, spec in keys.items():
                root.create_array(io.data_path(key), **data_layout(spec))
            for name in io.META_ARRAYS:
                root.create_array(io.meta_path(name), **meta_layout(name))
            os.rename(tmp, path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"{path}: cannot create store: {e.strerror or e}") from None
        return cls.open(path, "a", durable=durable)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, durable: bool = True) -> "Store":
        """Open for reading ("r") or as the single writer ("a"; truncates uncommitted rows).
        `durable`: the writer syncs the filesystem before and after each commit marker."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        attrs = io.read_root_attrs(path)
        keys = io.key_specs(path, attrs)
        lock = WriterLock.acquire(path) if mode == "a" else None
        try:
            zstore = zarr.storage.LocalStore(path, read_only=mode == "r")
            data, meta = io.open_all(zstore, path, keys, writable=mode == "a")
            store = cls(path, mode, zstore, attrs, keys, data, meta, lock, durable)
            store.recovered = store._truncate_uncommitted() if lock else {}
            return store
        except BaseException as e:
            if lock:
                lock.release()
            if isinstance(e, OSError):
                raise StoreError(f"{path}: cannot open ({mode!r}): {e.strerror or e}") from e
            raise

    def close(self) -> None:
        """Discard an open (uncommitted) episode and release the writer lock."""
        with self._io:
            if self._lock and self._lock.held:
                if self._episode_open or self._needs_truncate:
                    try:
                        self._truncate_uncommitted()
                    except Exception:  # noqa: BLE001 - the next writer truncates anyway
                        pass
                self._lock.release()
            self._episode_open = False

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading (committed episodes only) ----

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    def refresh(self) -> int:
        """Reader: pick up episodes committed since opening; returns n_episodes."""
        if self.mode == "r":
            with self._io:
                ends_array = io.open_array(self._zstore, self.path, io.meta_path("episode_ends"), False)
                ends = io.read_committed_ends(ends_array)
                if len(ends) < len(self._ends):
                    raise StoreError(f"{self.path}: committed episodes disappeared ({len(self._ends)} -> {len(ends)}); "
                                     "the store was rewritten, reopen it")
                self._ends = ends
                self._sync_handles()
        return self.n_episodes

    def episode_slice(self, i: int) -> slice:
        n = self.n_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: {self.path} has {n} committed episodes")
        i %= n
        return slice(int(self._ends[i - 1]) if i else 0, int(self._ends[i]))

    def read_episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        if i >= self.n_episodes:
            self.refresh()
        s = self.episode_slice(i)
        return {k: self._read_rows(k, s) for k in self._select(keys)}

    def iter_episodes(self, keys: Iterable[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        selected = self._select(keys)
        for i in range(self.n_episodes):
            yield self.read_episode(i, selected)

    def episodes_meta(self) -> list[dict]:
        """source, success, length, start_time, duration, base_ckpt, health of each committed episode."""
        n = self.n_episodes
        if n == 0:
            return []
        cols = {name: arr[:n] for name, arr in self._meta.items()}
        if len(cols["episode_source"]) and int(cols["episode_source"].max()) >= len(self._labels):
            self._labels = list(io.open_array(self._zstore, self.path, io.meta_path("episode_source"), False)
                                .attrs.get("labels", self._labels))
        starts = np.concatenate([[0], self._ends[:-1]])
        return [{
            "index": i, "source": self._labels[int(cols["episode_source"][i])],
            "success": bool(cols["episode_success"][i]), "length": int(self._ends[i] - starts[i]),
            "start": int(starts[i]), "end": int(self._ends[i]),
            "start_time": float(cols["episode_start_time"][i]), "duration": float(cols["episode_duration"][i]),
            "base_ckpt": str(cols["episode_base_ckpt"][i]), "health": json.loads(str(cols["episode_health"][i]) or "{}"),
        } for i in range(n)]

    def load(self, keys: Iterable[str] | None = None, episodes: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Committed episodes in RAM (for training): {key: (N, ...)} plus `episode_ends` of the
        loaded episodes (cumulative, starting from the first loaded one)."""
        selected = self._select(keys)
        slices = [self.episode_slice(i) for i in (range(self.n_episodes) if episodes is None else episodes)]
        lengths = np.array([s.stop - s.start for s in slices], dtype=np.int64)
        out: dict[str, np.ndarray] = {}
        runs = _contiguous_runs(slices)
        for key in selected:
            if len(runs) == 1:
                out[key] = self._read_rows(key, runs[0])
                continue
            spec = self.keys[key]
            buf = np.empty((int(lengths.sum()), *spec.shape), dtype=spec.dtype)
            pos = 0
            for run in runs:
                self._read_rows(key, run, buf[pos:pos + run.stop - run.start])
                pos += run.stop - run.start
            out[key] = buf
        out["episode_ends"] = np.cumsum(lengths)
        return out

    # ---- writing ----

    def append_episode(self, data: Mapping[str, Any], *, source: str, success: bool, start_time: float,
                       health: Mapping[str, Any] | None, base_ckpt: str = "", duration: float | None = None) -> int:
        """Write one whole episode and commit it; returns its index. On any failure (full disk,
        ...) the episode is rolled back and StoreError says it was lost; earlier ones are intact."""
        self._require_writer()
        check_keys(data, self.keys)
        arrays = {k: check_value(k, spec, data[k], per_episode=True) for k, spec in self.keys.items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise StoreError(f"episode keys must share one non-zero length, got {sorted(lengths)}")
        check_label(source)
        encode_health(health)
        with self._io:
            self._begin_episode()
            self._append_rows(arrays)
            return self._commit_episode(source=source, success=success, start_time=start_time, health=health,
                                        base_ckpt=base_ckpt, duration=duration, stamps=arrays.get("stamp"))

    def _require_writer(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} is not open for writing (use Store.open(path, 'a'))")

    def _begin_episode(self) -> None:
        with self._io:
            self._require_writer()
            if self._episode_open:
                raise StoreError(f"{self.path}: an episode is already being written (commit or discard it first)")
            if self._needs_truncate:
                try:
                    self._truncate_uncommitted()
                except OSError as e:
                    raise StoreError(f"{self.path}: cannot start an episode: the rows of the lost one cannot be "
                                     f"removed ({e.strerror or e})") from e
                self._needs_truncate = False
            self._episode_open = True

    def _append_rows(self, rows: Mapping[str, np.ndarray]) -> None:
        """Add rows of the open episode to every data array (beyond n_steps: invisible to readers)."""
        with self._io:
            if not self._episode_open:
                raise StoreError(f"{self.path}: no episode is open")
            try:
                for key, arr in self._data.items():
                    arr.append(rows[key])
            except BaseException as e:
                self._lose_episode(e)

    def _commit_episode(self, *, source: str, success: bool, start_time: float, health, base_ckpt: str,
                        duration: float | None, stamps: np.ndarray | None) -> int:
        with self._io:
            if not self._episode_open:
                raise StoreError(f"{self.path}: no episode is open")
            check_label(source)  # caller mistakes: raise before touching anything, episode stays open
            health_json = encode_health(health)
            episode, start = self.n_episodes, self.n_steps
            end = self._data[next(iter(self._data))].shape[0]
            if end <= start or any(a.shape[0] != end for a in self._data.values()):
                self._lose_episode(StoreError(f"empty or ragged episode (data rows: "
                                              f"{sorted({a.shape[0] - start for a in self._data.values()})})"))
            if duration is None:
                period = 1.0 / float(self.attrs["control_rate_hz"])
                duration = float(stamps[-1] - stamps[0]) + period if stamps is not None else (end - start) * period
            committed = False
            try:
                if self._durable:
                    io.sync_filesystem(self.path)
                self._phase("rows_written", episode)
                if source not in self._labels:  # a new label is saved before any row uses it
                    self._meta["episode_source"].update_attributes({"labels": [*self._labels, source]})
                    self._labels = [*self._labels, source]
                row = {"episode_source": self._labels.index(source), "episode_success": bool(success),
                       "episode_start_time": float(start_time), "episode_duration": float(duration),
                       "episode_base_ckpt": str(base_ckpt), "episode_health": health_json}
                for name, value in row.items():
                    self._meta[name].append(np.array([value], dtype=self._meta[name].dtype))
                self._phase("meta_written", episode)
                self._meta["episode_ends"].append(np.array([end], dtype=np.int64))  # the commit marker
                committed = True
                self._ends = np.append(self._ends, np.int64(end))
                self._episode_open = False
                if self._durable:
                    io.sync_filesystem(self.path)
                self._phase("committed", episode)
            except BaseException as e:
                if not committed:
                    self._lose_episode(e)
                raise StoreError(f"{self.path}: episode {episode} was committed but syncing it failed: {e}") from e
            return episode

    def _phase(self, phase: str, episode: int) -> None:
        if self.on_commit_phase is not None:
            self.on_commit_phase(phase, episode)

    def _discard_episode(self) -> None:
        with self._io:
            self._episode_open = False
            try:
                self._truncate_uncommitted()
            except BaseException:
                self._needs_truncate = True
                raise

    def _lose_episode(self, exc: BaseException) -> None:
        """Roll the open episode back and report it lost (re-raising non-Exceptions like Ctrl-C)."""
        self._episode_open = False
        try:
            self._truncate_uncommitted()
        except BaseException:  # noqa: BLE001 - retried before the next episode, and on reopen
            self._needs_truncate = True
        if not isinstance(exc, Exception):
            raise exc
        if isinstance(exc, OSError) and exc.errno:
            reason = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise StoreError(f"{self.path}: episode {self.n_episodes} was lost ({reason}); "
                         f"the {self.n_episodes} committed episodes before it are intact") from exc

    def _truncate_uncommitted(self) -> dict[str, int]:
        """Shrink every array to the committed prefix; returns {array: rows removed}."""
        removed = {}
        for key, arr in self._data.items():
            removed[io.data_path(key)] = io.truncate(arr, self.n_steps)
        for name, arr in self._meta.items():
            removed[io.meta_path(name)] = io.truncate(arr, self.n_episodes)
        return {k: v for k, v in removed.items() if v}

    # ---- helpers ----

    def _select(self, keys: Iterable[str] | None) -> list[str]:
        if keys is None:
            return list(self.keys)
        keys = [keys] if isinstance(keys, str) else list(keys)
        unknown = [k for k in keys if k not in self.keys]
        if unknown:
            raise StoreError(f"{self.path}: no key {', '.join(map(repr, unknown))} (keys: {', '.join(self.keys)})")
        return keys

    def _read_rows(self, key: str, rows: slice, out: np.ndarray | None = None) -> np.ndarray:
        spec = self.keys[key]
        if out is None:
            out = np.empty((rows.stop - rows.start, *spec.shape), dtype=spec.dtype)
        if spec.is_image:
            read_frames(self._data[key], self.path / io.data_path(key), range(rows.start, rows.stop), out)
        else:
            out[:] = self._data[key][rows]
        return out

    def _sync_handles(self) -> None:
        """Re-open arrays whose cached shape is shorter than the committed prefix (a reader's
        handles go stale while the writer appends); still short afterwards means a damaged store."""
        need = {**{io.data_path(k): (a, self.n_steps) for k, a in self._data.items()},
                **{io.meta_path(k): (a, self.n_episodes) for k, a in self._meta.items()}}
        for name, (arr, rows) in need.items():
            if arr.shape[0] >= rows:
                continue
            fresh = io.open_array(self._zstore, self.path, name, self.writable)
            if fresh.shape[0] < rows:
                raise StoreError(f"{self.path}: array {name!r} has {fresh.shape[0]} rows but {rows} are committed "
                                 "(the store is damaged; run check())")
            group, _, key = name.partition("/")
            (self._data if group == "data" else self._meta)[key] = fresh

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, mode={self.mode!r}, episodes={self.n_episodes}, steps={self.n_steps})"


def _contiguous_runs(slices: list[slice]) -> list[slice]:
    runs: list[slice] = []
    for s in slices:
        if runs and runs[-1].stop == s.start:
            runs[-1] = slice(runs[-1].start, s.stop)
        else:
            runs.append(s)
    return runs or [slice(0, 0)]


def repair(path: str | os.PathLike) -> dict:
    """Truncate everything beyond the last committed episode and delete stray temp files; reports
    what was removed. Takes the writer lock, so it refuses to run while a writer is alive."""
    store = Store.open(path, "a", durable=False)
    try:
        partials = io.partial_files(store.path)
        for f in partials:
            f.unlink(missing_ok=True)
        return {"path": str(store.path), "episodes": store.n_episodes, "steps": store.n_steps,
                "removed_rows": store.recovered, "removed_partial_files": len(partials),
                "stale_lock": store._lock.previous or None}
    finally:
        store.close()
