"""Reading a fine-tuning run directory into plain records: session.jsonl, the eval files, run.json
and the store's episode metadata.

Only session.jsonl is required; every other piece may be missing (its report section then says "not
recorded"). Bad input raises ConfigError naming the file (and line), so `robot-rl report` exits 2
with one line instead of a traceback. Diagnostics arrive as string key/values, so every number is
coerced here, once, and the rest of the report works on floats and ints.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_rl.config import ConfigError
from robot_rl.stats import wilson

SESSION = "session.jsonl"
EVAL_BASE, EVAL_FINAL, RUN_JSON = "eval_base.json", "eval_final.json", "run.json"


def number(value: Any) -> float | None:
    """A finite float from a JSON number, a numeric string or a bool; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return float(text == "true")
        try:
            v = float(text)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def integer(value: Any, default: int | None = None) -> int | None:
    v = number(value)
    return default if v is None else int(round(v))


def flag(value: Any) -> bool | None:
    v = number(value)
    return None if v is None else v != 0.0


def samples(value: Any) -> list[float]:
    """Latency samples: a JSON list, or a JSON list inside a string (diagnostics are strings)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    if not isinstance(value, (list, tuple)):
        return []
    return [v for v in map(number, value) if v is not None]


def numbers(values: Any) -> dict[str, float]:
    """The numeric entries of a diagnostics dict (strings like "last_reject_reason" dropped)."""
    if not isinstance(values, dict):
        return {}
    return {k: v for k, v in ((k, number(x)) for k, x in values.items()) if v is not None}


@dataclass
class Episode:
    """One `episode_done` event of the session log."""

    number: int  # 1-based position in the session
    line: int  # line in session.jsonl (for messages)
    index: int | None  # the committed store episode
    success: bool
    steps: int
    seconds: float | None
    health_ok: bool | None
    wall_s: float | None
    stamp: float | None
    learner: dict[str, float]
    policy: dict[str, float]
    robot: dict[str, float]
    interventions: int
    inference_ms: list[float]
    tick_ms: list[float]
    policy_reported: bool = False  # the event carried a non-empty policy block


@dataclass
class EvalResult:
    path: Path
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_steps: float | None
    # per-episode successes in layout order and the layout seed: two evals with the same seed ran the
    # same layouts, so base and fine-tuned can be compared episode by episode
    outcomes: list[bool] | None = None
    seed: int | None = None
    parallel: int = 1  # graphs side by side (eval --parallel): graph k ran seed + k's layouts


@dataclass
class RunData:
    run_dir: Path
    episodes: list[Episode]
    aborted: list[dict] = field(default_factory=list)
    session_done: dict | None = None
    wall_s: float | None = None
    base: EvalResult | None = None
    final: EvalResult | None = None
    run: dict = field(default_factory=dict)
    store_path: Path | None = None
    store_meta: list[dict] | None = None  # Store.episodes_meta() of every committed episode
    store_attrs: dict = field(default_factory=dict)
    store_note: str = "no store given (--store) and none named in run.json"


def load_run(run_dir: Path, store: Path | None = None) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    if not (run_dir / SESSION).is_file():
        raise ConfigError(f"{run_dir} has no {SESSION} (written by robot-rl finetune)")
    data = read_session(run_dir / SESSION, run_dir)
    data.base = read_eval(run_dir / EVAL_BASE)
    data.final = read_eval(run_dir / EVAL_FINAL)
    data.run = read_json(run_dir / RUN_JSON) or {}
    _attach_store(data, store)
    return data


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when absent."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON ({e.msg} at column {e.colno})", f"line {e.lineno}", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", "", path) from None
    if not isinstance(value, dict):
        raise ConfigError("expected a JSON object", "", path)
    return value


def read_session(path: Path, run_dir: Path) -> RunData:
    data = RunData(run_dir=run_dir, episodes=[])
    walls: list[float] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", "", path) from None
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not valid JSON ({e.msg} at column {e.colno})", f"line {n}", path) from None
        if not isinstance(event, dict):
            raise ConfigError(f"expected one JSON object per line, got {type(event).__name__}", f"line {n}", path)
        wall = number(event.get("wall_s"))
        if wall is not None:
            walls.append(wall)
        kind = event.get("event")
        if kind == "episode_done":
            data.episodes.append(_episode(event, len(data.episodes) + 1, n, path))
        elif kind == "aborted":
            data.aborted.append({"line": n, "reason": str(event.get("reason", "")), "wall_s": wall})
        elif kind == "session_done":
            data.session_done = event
    data.wall_s = max(walls) if walls else _stamp_span(data.episodes)
    return data


def _episode(event: dict, number_: int, line: int, path: Path) -> Episode:
    def required(name: str, convert):
        value = convert(event.get(name))
        if value is None:
            raise ConfigError(f"episode_done has no valid '{name}' (got {event.get(name)!r})", f"line {line}", path)
        return value

    policy = event.get("policy") if isinstance(event.get("policy"), dict) else {}
    return Episode(
        number=number_, line=line, index=integer(event.get("index")), success=required("success", flag),
        steps=required("steps", integer), seconds=number(event.get("seconds")),
        health_ok=flag(event.get("health_ok")), wall_s=number(event.get("wall_s")), stamp=number(event.get("stamp")),
        learner=numbers(event.get("learner")), policy=numbers(policy), robot=numbers(event.get("robot")),
        interventions=integer(event.get("interventions", policy.get("interventions")), 0) or 0,
        inference_ms=samples(policy.get("inference_ms")), tick_ms=samples(policy.get("tick_ms")),
        policy_reported=bool(policy),
    )


def _stamp_span(episodes: list[Episode]) -> float | None:
    stamps = [e.stamp for e in episodes if e.stamp is not None]
    return stamps[-1] - stamps[0] if len(stamps) > 1 else None


def read_eval(path: Path) -> EvalResult | None:
    """An eval file of `robot-rl eval --out`; the rate and interval are recomputed from its counts."""
    doc = read_json(path)
    if doc is None:
        return None
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    results = doc.get("results") if isinstance(doc.get("results"), list) else None
    episodes, successes = integer(summary.get("episodes")), integer(summary.get("successes"))
    if results is not None and (episodes is None or successes is None):
        episodes = len(results)
        successes = sum(bool(flag(r.get("success"))) for r in results if isinstance(r, dict))
    if episodes is None or successes is None or not 0 <= successes <= episodes:
        raise ConfigError("needs summary.episodes and summary.successes (0 <= successes <= episodes) or a "
                          "results list", "summary", path)
    steps = number(summary.get("mean_steps"))
    if steps is None and results:
        steps = sum(integer(r.get("steps"), 0) for r in results if isinstance(r, dict)) / len(results)
    lo, hi = wilson(successes, episodes)
    outcomes = [bool(flag(r.get("success"))) for r in results if isinstance(r, dict)] if results else None
    return EvalResult(path=path, episodes=episodes, successes=successes,
                      success_rate=successes / episodes if episodes else 0.0, ci95=(lo, hi), mean_steps=steps,
                      outcomes=outcomes if outcomes and len(outcomes) == episodes else None,
                      seed=integer(summary.get("seed")), parallel=integer(summary.get("parallel"), 1))


def _attach_store(data: RunData, store: Path | None) -> None:
    """Episode metadata of the store: from the `store` argument (must exist) or run.json's."""
    from robot_rl.data.schema import StoreError
    from robot_rl.data.store import Store

    explicit = store is not None
    if store is None:
        named = data.run.get("store")
        if not named:
            return
        store = Path(named)
        if not store.is_absolute() and not store.exists() and (data.run_dir / store).exists():
            store = data.run_dir / store
    store = Path(store)
    data.store_path = store
    if not store.exists():
        if explicit:
            raise ConfigError(f"store {store} does not exist")
        data.store_note = f"store {store} (from run.json) does not exist"
        return
    try:
        opened = Store.open(store, "r")
    except StoreError as e:
        if explicit:
            raise ConfigError(str(e)) from None
        data.store_note = f"store {store} cannot be read: {e}"
        return
    try:
        data.store_meta = opened.episodes_meta()
        data.store_attrs = {"control_rate_hz": number(opened.attrs.get("control_rate_hz"))}
    finally:
        opened.close()
    data.store_note = ""
