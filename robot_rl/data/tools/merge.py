"""`merge`: several stores of one schema into a new store, episodes in input order with their
meta (source, success, start time, duration, base checkpoint, health) unchanged and data bit-identical.

The new store is built next to the output path and renamed into place when complete, so a failed
merge leaves nothing behind. Store has no public way to append an episode in blocks with a given
duration, so this drives the writer's `_begin_episode` / `_append_rows` / `_commit_episode`
(the same calls EpisodeWriter makes) to copy long episodes without holding them in RAM.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from robot_rl.data.schema import RESERVED_ATTRS, StoreError
from robot_rl.data.store import Store
from robot_rl.data.store_io import sync_filesystem
from robot_rl.data.tools.common import ToolError, iter_blocks, open_store, tqdm_bar

BLOCK_BYTES = 64 << 20
MUST_MATCH_ATTRS = ("control_rate_hz",)


def schema_difference(a: Store, b: Store) -> str | None:
    """Why `b` cannot be merged with `a` (naming the key or attribute), or None."""
    for key in [*a.keys, *(k for k in b.keys if k not in a.keys)]:
        if key not in b.keys:
            return f"{b.path} has no key {key!r} (which {a.path} has)"
        if key not in a.keys:
            return f"{b.path} has key {key!r} which {a.path} does not have"
        sa, sb = a.keys[key], b.keys[key]
        if sa != sb:
            return (f"key {key!r} is {sb.dtype}{tuple(sb.shape)} per step in {b.path} "
                    f"but {sa.dtype}{tuple(sa.shape)} in {a.path}")
    for name in MUST_MATCH_ATTRS:
        if a.attrs.get(name) != b.attrs.get(name):
            return f"attribute {name!r} is {b.attrs.get(name)!r} in {b.path} but {a.attrs.get(name)!r} in {a.path}"
    return None


def merge(out: str | os.PathLike, inputs: list[str | os.PathLike], progress: bool = True) -> dict:
    """Merge `inputs` into a new store at `out`; returns {"out", "episodes", "steps", "warnings"}."""
    out = Path(out)
    if not inputs:
        raise ToolError("merge needs at least one input store")
    if out.exists():
        raise ToolError(f"{out}: already exists; merge writes a new store (remove it or pick another path)")
    stores = [open_store(p) for p in inputs]
    first = stores[0]
    warnings = []
    for s in stores[1:]:
        why = schema_difference(first, s)
        if why:
            raise ToolError(f"cannot merge: {why}")
        differing = sorted(k for k in {*first.attrs, *s.attrs} - {*RESERVED_ATTRS, "merged_from"}
                           if first.attrs.get(k) != s.attrs.get(k))
        if differing:
            warnings.append(f"{s.path}: attribute(s) {', '.join(differing)} differ; "
                            f"the merged store keeps {first.path}'s")
    attrs = {k: v for k, v in first.attrs.items() if k not in RESERVED_ATTRS}
    attrs["merged_from"] = [{"path": str(s.path.resolve()), "episodes": s.n_episodes} for s in stores]
    keys = list(first.keys)
    block = max(1, min(4096, BLOCK_BYTES // max(1, sum(spec.row_bytes for spec in first.keys.values()))))
    tmp = out.with_name(f".{out.name}.merging-{uuid.uuid4().hex[:8]}")
    bar = tqdm_bar(sum(s.n_steps for s in stores), "merge", "step", progress)
    try:
        try:
            dst = Store.create(tmp, keys=first.keys, attrs=attrs, durable=False)
        except StoreError as e:
            raise ToolError(str(e)) from None
        with dst:
            for src in stores:
                for m in src.episodes_meta():
                    dst._begin_episode()
                    for _, rows in iter_blocks(src, m["index"], keys, block):
                        dst._append_rows(rows)
                        bar.update(len(rows[keys[0]]))
                    dst._commit_episode(source=m["source"], success=m["success"], start_time=m["start_time"],
                                        health=m["health"], base_ckpt=m["base_ckpt"], duration=m["duration"],
                                        stamps=None)
            episodes, steps = dst.n_episodes, dst.n_steps
        sync_filesystem(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return {"out": out, "episodes": episodes, "steps": steps, "warnings": warnings}
