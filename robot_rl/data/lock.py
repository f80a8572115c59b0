"""The single-writer lock of a store: `fcntl.flock` on `<store>/.writer.lock`.

flock belongs to the open file, so the kernel drops it the moment a writer dies (even by kill -9):
a stale lock file is recovered simply by locking it again. The file's content (pid, host, time)
only serves error messages. flock is per host; two machines writing one store over NFS are not
protected.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from robot_rl.data.schema import WRITER_LOCK_NAME, StoreError


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (no holder recorded)"
    since = holder.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('hostname', '?')}{when}"


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        holder = json.loads(raw.decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


class WriterLock:
    """Held while a Store is open for writing; `previous` is what a dead earlier writer left."""

    def __init__(self, path: Path, fd: int, previous: dict):
        self.path, self._fd, self.previous = path, fd, previous

    @classmethod
    def acquire(cls, store_path: Path) -> "WriterLock":
        path = Path(store_path) / WRITER_LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{store_path}: cannot open for writing: {e.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StoreError(
                    f"{store_path} is already open for writing by {_describe(holder)}; "
                    "a store has one writer at a time (close that writer first)"
                ) from None
            raise StoreError(f"{store_path}: cannot lock {path}: {e.strerror}") from None
        previous = _read_holder(fd)
        record = {"pid": os.getpid(), "hostname": socket.gethostname(), "since": time.time()}
        try:  # best effort: a full disk must not stop repair() from freeing space
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:
            pass
        return cls(path, fd, previous)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
