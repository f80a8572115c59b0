"""Replacing a directory atomically (checkpoints): a reader sees the old one or the new one, never a mix."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush a file or directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(tmp: Path, path: Path) -> Path:
    """Move the fully written directory `tmp` into place at `path`, replacing any previous one.

    A crash between the two renames leaves only `.<name>.old-*` beside `path`; loaders may fall
    back to it. `tmp` is removed if anything fails."""
    try:
        fsync(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        fsync(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
