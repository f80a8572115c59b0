"""`info`, `check` and `repair` reports: what a store holds and whether it is sound, as text."""
from __future__ import annotations

import os
from pathlib import Path

from robot_rl.data import store_io
from robot_rl.data.schema import StoreError
from robot_rl.data.store import check, repair
from robot_rl.data.tools.common import ToolError, open_store

CHECK_OK, CHECK_PROBLEMS, CHECK_NOT_A_STORE = 0, 1, 2


def health_text(health: dict) -> str:
    if not health:
        return "-"
    if health.get("ok", True):
        return "ok"
    return "; ".join(health.get("problems") or ["flagged"])


def info(path: str | os.PathLike) -> str:
    """The episode table and totals of a store."""
    store = open_store(path)
    meta = store.episodes_meta()
    header = ("#", "source", "steps", "duration", "success", "health", "base ckpt")
    rows = [(str(m["index"]), m["source"], str(m["length"]), f"{m['duration']:.2f} s",
             "yes" if m["success"] else "no", health_text(m["health"]), m["base_ckpt"][:12] or "-") for m in meta]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    fmt = "  ".join(f"{{:{'>' if c in (0, 2, 3) else '<'}{w}}}" for c, w in enumerate(widths))
    lines = [f"{store.path}: schema v{store.attrs.get('schema_version')}, "
             f"control rate {store.attrs.get('control_rate_hz')} Hz, profile "
             f"{(store.attrs.get('profile') or {}).get('name', '-')}", ""]
    lines += [fmt.format(*header).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]
    n = len(meta)
    wins = sum(m["success"] for m in meta)
    flagged = sum(not m["health"].get("ok", True) for m in meta)
    sources = {}
    for m in meta:
        sources[m["source"]] = sources.get(m["source"], 0) + 1
    lines += ["", f"episodes: {n} ({', '.join(f'{v} {k}' for k, v in sources.items()) or 'none'})",
              f"steps:    {store.n_steps} ({sum(m['duration'] for m in meta):.1f} s recorded)",
              f"success:  {wins}/{n}" + (f" ({wins / n:.0%})" if n else ""),
              f"health:   {n - flagged} ok, {flagged} flagged", "keys:"]
    width = max(map(len, store.keys))
    lines += [f"  {k:{width}}  {spec.dtype:8} {tuple(spec.shape)}" for k, spec in store.keys.items()]
    return "\n".join(lines)


def check_report(path: str | os.PathLike, deep: bool = False) -> tuple[int, list[str]]:
    """(exit code, problems): 0 sound, 1 problems found, 2 not a store at all."""
    path = Path(path)
    try:
        store_io.key_specs(path, store_io.read_root_attrs(path))
    except StoreError as e:
        return CHECK_NOT_A_STORE, [str(e)]
    problems = check(path, deep=deep)
    return (CHECK_PROBLEMS if problems else CHECK_OK), problems


def repair_report(path: str | os.PathLike) -> list[str]:
    """Run the library's repair (takes the writer lock) and describe what it removed."""
    try:
        result = repair(path)
    except StoreError as e:
        raise ToolError(str(e)) from None
    lines = [f"{path}: {result['episodes']} committed episode(s), {result['steps']} steps kept"]
    for name, rows in sorted(result["removed_rows"].items()):
        lines.append(f"  removed {rows} uncommitted row(s) of {name}")
    if result["removed_partial_files"]:
        lines.append(f"  deleted {result['removed_partial_files']} stray temp file(s)")
    if result["stale_lock"]:
        dead = result["stale_lock"]
        lines.append(f"  took over the lock of a dead writer "
                     f"(pid {dead.get('pid', '?')} on {dead.get('hostname', '?')})")
    if len(lines) == 1:
        lines.append("  nothing to remove")
    return lines
