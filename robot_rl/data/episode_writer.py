"""Streaming episode recording: steps go to disk in blocks while the episode runs, so a long episode
never lives only in RAM and commit is quick (only the last block plus the meta rows remain).

Uncommitted rows sit beyond the store's committed end where readers never look; a crash or
`discard()` drops them. With `background=True` the disk writes run in a worker thread so
`add_step` (called from a control loop or a ROS callback) only copies arrays into a buffer.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from robot_rl.data.schema import StoreError, check_keys, check_label, check_value, encode_health
from robot_rl.data.store import Store
from robot_rl.data.store_io import sync_filesystem


class EpisodeWriter:
    """One episode at a time into `store` (which must be open for writing). Thread-safe: every
    public method may be called from any thread; calls are serialised."""

    def __init__(self, store: Store, *, flush_steps: int = 32, background: bool = True, max_pending: int = 3):
        if not store.writable:
            raise StoreError(f"{store.path} is not open for writing (use Store.open(path, 'a'))")
        if flush_steps < 1 or max_pending < 1:
            raise ValueError("flush_steps and max_pending must be at least 1")
        self.store, self.flush_steps, self.max_pending = store, flush_steps, max_pending
        self._specs = dict(store.keys)
        self._keyset = set(self._specs)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="episode-writer") if background else None
        self._pending: deque[Future] = deque()
        self._free: list[dict[str, np.ndarray]] = []
        self._buf: dict[str, np.ndarray] | None = None
        self._fill = 0
        self._open = False
        self._error: BaseException | None = None
        self._steps = 0
        self._source = "demo"
        self._start_time: float | None = None
        self._first_stamp = self._last_stamp = None

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def n_steps(self) -> int:
        """Steps added to the open episode so far."""
        return self._steps

    @property
    def source(self) -> str:
        """The source label the open (or last) episode was begun with."""
        return self._source

    def begin(self, *, source: str = "demo", start_time: float | None = None) -> None:
        """Start an episode. `start_time` defaults to the first step's `stamp` (else wall time now)."""
        check_label(source)
        with self._lock:
            if self._open:
                raise StoreError("an episode is already open (commit or discard it first)")
            self.store._begin_episode()
            self._open, self._error, self._steps, self._fill = True, None, 0, 0
            self._source, self._start_time = source, start_time
            self._first_stamp = self._last_stamp = None
            self._wall_start = time.time()
            self._buf = self._take_buffer()

    def add_step(self, step: Mapping[str, Any]) -> None:
        """Copy one control step (every store key, per-step shape) into the episode."""
        with self._lock:
            self._raise_if_failed()
            if not self._open:
                raise StoreError("no episode is open (call begin() first)")
            if step.keys() != self._keyset:
                check_keys(step, self._specs)
            values = {k: check_value(k, spec, step[k], per_episode=False) for k, spec in self._specs.items()}
            i = self._fill
            for k, v in values.items():
                self._buf[k][i] = v
            if "stamp" in values:
                self._last_stamp = float(values["stamp"])
                if self._first_stamp is None:
                    self._first_stamp = self._last_stamp
            self._fill += 1
            self._steps += 1
            if self._fill == self.flush_steps:
                self._flush()
                self._raise_if_failed()

    def commit(self, success: bool, health: Mapping[str, Any] | None = None, *, source: str | None = None,
               base_ckpt: str = "", start_time: float | None = None) -> int:
        """Write the rest of the episode and commit it; returns its index. A full disk or other IO
        failure raises StoreError saying the episode was lost (earlier episodes stay intact)."""
        source = source or self._source
        check_label(source)
        encode_health(health)
        with self._lock:
            self._raise_if_failed()
            if not self._open:
                raise StoreError("no episode is open (call begin() first)")
            if self._steps == 0:
                raise StoreError("cannot commit an episode without steps (discard it instead)")
            if self._fill:
                self._flush()
            self._drain()
            self._raise_if_failed()
            start = start_time if start_time is not None else self._start_time
            if start is None:
                start = self._first_stamp if self._first_stamp is not None else self._wall_start
            stamps = None if self._first_stamp is None else np.array([self._first_stamp, self._last_stamp])
            try:
                return self.store._commit_episode(source=source, success=success, start_time=start, health=health,
                                                  base_ckpt=base_ckpt, duration=None, stamps=stamps)
            finally:
                self._open = self.store._episode_open  # still open only if the caller can retry

    def discard(self) -> None:
        """Drop the open episode (nothing of it stays on disk)."""
        with self._lock:
            if not self._open:
                return
            self._drain(ignore_errors=True)
            self._open, self._fill, self._steps = False, 0, 0
            if self.store._episode_open:
                self.store._discard_episode()

    def close(self) -> None:
        """Discard an open episode and stop the worker thread (the store stays open)."""
        self.discard()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals (called with self._lock held) ----

    def _take_buffer(self) -> dict[str, np.ndarray]:
        if self._free:
            return self._free.pop()
        return {k: np.empty((self.flush_steps, *s.shape), dtype=s.dtype) for k, s in self._specs.items()}

    def _flush(self) -> None:
        buf, n = self._buf, self._fill
        self._buf, self._fill = self._take_buffer(), 0
        if self._pool is None:
            self._write_block(buf, n)
            return
        while len(self._pending) >= self.max_pending:  # back-pressure: the disk is slower than the steps
            self._wait_oldest()
        self._pending.append(self._pool.submit(self._write_block, buf, n))

    def _write_block(self, buf: dict[str, np.ndarray], n: int) -> None:
        try:
            self.store._append_rows({k: v[:n] for k, v in buf.items()})
            if self._pool is not None and self.store._durable:
                sync_filesystem(self.store.path)  # off the caller's thread, so commit has little left to sync
        except BaseException as e:  # noqa: BLE001 - surfaced to the caller by _raise_if_failed
            if self._error is None:
                self._error = e
        finally:
            self._free.append(buf)

    def _wait_oldest(self) -> None:
        self._pending.popleft().result()

    def _drain(self, ignore_errors: bool = False) -> None:
        while self._pending:
            self._wait_oldest()
        if self._error is not None and ignore_errors:
            self._error = None

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        error, self._error = self._error, None
        self._drain()
        self._error = None
        self._open, self._fill, self._steps = False, 0, 0
        if self.store._episode_open:
            try:
                self.store._discard_episode()
            except Exception:  # noqa: BLE001 - the store retries the truncation before the next episode
                pass
        if isinstance(error, StoreError):
            raise error
        raise StoreError(f"episode lost: {error}") from error
