"""From the run's records to numbers: rolling success with Wilson bands, per-episode safety clips,
latency percentiles, and summary.json (including the cross-check against the store's labels).

Plots and the HTML page read the same functions, so a number in the page, in a figure and in
summary.json always comes from one computation.
"""
from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from robot_rl.report.load import Episode, EvalResult, RunData, number
from robot_rl.stats import wilson

WINDOW = 20  # episodes in the rolling success window and in "last 20"
SAFETY_COUNTERS = ("position_clips", "velocity_limited", "stale_holds", "commands_rejected")
LEARNER_COUNTERS = ("env_steps", "critic_updates", "actor_updates", "episodes_ingested", "realized_utd",
                    "online_size", "demo_size", "weight_version", "publishes")


def rolling_success(outcomes: list[bool], window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing-window success rate after each episode and its Wilson 95 % interval."""
    rate, lo, hi = (np.zeros(len(outcomes)) for _ in range(3))
    for i in range(len(outcomes)):
        chunk = outcomes[max(0, i - window + 1):i + 1]
        k, n = sum(chunk), len(chunk)
        rate[i] = k / n
        lo[i], hi[i] = wilson(k, n)
    return rate, lo, hi


def env_steps(episodes: list[Episode]) -> np.ndarray:
    """Cumulative environment steps at the end of each episode."""
    return np.cumsum([e.steps for e in episodes]).astype(np.int64)


def safety_clips(episodes: list[Episode]) -> dict[str, list[int]] | None:
    """Per-episode increments of the robot's cumulative safety counters (a counter that went down
    means the robot restarted: the new value is the increment). None when the robot never reported."""
    if not any(e.robot for e in episodes):
        return None
    out: dict[str, list[int]] = {}
    for name in SAFETY_COUNTERS:
        if not any(name in e.robot for e in episodes):
            continue
        previous, deltas = 0.0, []
        for e in episodes:
            value = e.robot.get(name)
            if value is None:
                deltas.append(0)
                continue
            deltas.append(int(round(value - previous if value >= previous else value)))
            previous = value
        out[name] = deltas
    return out


def learner_series(episodes: list[Episode], key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a learner diagnostic over the episodes that reported both."""
    pairs = [(e.learner[x], e.learner[key]) for e in episodes if key in e.learner and x in e.learner]
    return (np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float))


def wall_times(episodes: list[Episode]) -> np.ndarray:
    """Seconds since the session started at each episode (wall_s, else relative stamps)."""
    if all(e.wall_s is not None for e in episodes):
        return np.array([e.wall_s for e in episodes], dtype=float)
    stamps = [e.stamp for e in episodes]
    if all(s is not None for s in stamps) and stamps:
        return np.array(stamps, dtype=float) - stamps[0]
    return np.array([e.number for e in episodes], dtype=float) * np.nan


def latency(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "mean": _r(a.mean()), "p50": _r(np.percentile(a, 50)), "p90": _r(np.percentile(a, 90)),
            "p99": _r(np.percentile(a, 99)), "max": _r(a.max())}


def all_samples(episodes: list[Episode], name: str) -> list[float]:
    return [v for e in episodes for v in getattr(e, name)]


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def _rate_block(successes: int, n: int) -> dict:
    lo, hi = wilson(successes, n)
    return {"episodes": n, "successes": successes, "success_rate": _r(successes / n) if n else None,
            "ci95": [_r(lo), _r(hi)]}


def _eval_block(result: EvalResult | None) -> dict | None:
    if result is None:
        return None
    block = _rate_block(result.successes, result.episodes)
    block.update(file=result.path.name, mean_steps=None if result.mean_steps is None else _r(result.mean_steps, 2))
    return block


def paired(base: EvalResult | None, final: EvalResult | None) -> dict | None:
    """Base vs fine-tuned on the same layouts (same seed, graphs and count): episodes gained and lost, and
    the exact McNemar test's two-sided p (a binomial test on the discordant pairs)."""
    if base is None or final is None or base.outcomes is None or final.outcomes is None:
        return None
    if (base.seed is None or base.seed != final.seed or base.parallel != final.parallel
            or len(base.outcomes) != len(final.outcomes)):
        return None
    gained = sum(f and not b for b, f in zip(base.outcomes, final.outcomes))
    lost = sum(b and not f for b, f in zip(base.outcomes, final.outcomes))
    n = gained + lost
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n) if n else 1.0
    return {"episodes": len(base.outcomes), "seed": base.seed, "gained": gained, "lost": lost,
            "mcnemar_p": float(f"{p:.3g}")}  # significant digits: a strong result is not "p = 0"


def _last(episodes: list[Episode], source: str) -> dict[str, float]:
    """The newest non-empty diagnostics dict of one kind (a timed-out read leaves an empty one)."""
    return next((getattr(e, source) for e in reversed(episodes) if getattr(e, source)), {})


def _int_or_float(v: float) -> int | float:
    return int(v) if float(v).is_integer() else _r(v, 5)


def store_check(data: RunData) -> dict:
    """Session success recomputed from the store's labels of the episodes the session committed."""
    if data.store_meta is None:
        return {"recorded": False, "reason": data.store_note,
                "store": str(data.store_path) if data.store_path else None}
    meta = data.store_meta
    mismatches, seen, outcomes = [], Counter(), []
    for e in data.episodes:
        problem, stored = None, None
        if e.index is None:
            problem = "session.jsonl has no store index for this episode"
        elif not 0 <= e.index < len(meta):
            problem = f"index {e.index} is not a committed episode (store has {len(meta)})"
        else:
            row = meta[e.index]
            stored = row["success"]
            seen[e.index] += 1
            if seen[e.index] > 1:
                problem = f"index {e.index} appears more than once in session.jsonl"
            elif row["source"] != "rollout":
                problem = f"store episode {e.index} is a '{row['source']}' episode, not a rollout"
            elif stored != e.success:
                problem = f"success label differs: session {e.success}, store {stored}"
            if seen[e.index] == 1:
                outcomes.append(stored)
        if problem:
            mismatches.append({"episode": e.number, "line": e.line, "index": e.index,
                               "session_success": e.success, "store_success": stored, "problem": problem})
    rates = _rate_block(sum(outcomes), len(outcomes))
    last = outcomes[-WINDOW:]
    return {
        "recorded": True, "store": str(data.store_path), "store_episodes": len(meta),
        "store_episodes_by_source": dict(Counter(m["source"] for m in meta)),
        "flagged_episodes": sum(1 for m in meta if m["health"].get("ok") is False),
        "checked_episodes": len(outcomes), "store_successes": rates["successes"],
        "store_success_rate": rates["success_rate"], "store_ci95": rates["ci95"],
        "store_success_rate_last20": _r(sum(last) / len(last)) if last else None,
        "match": not mismatches, "mismatches": mismatches,
    }


def _session(data: RunData) -> dict:
    eps = data.episodes
    outcomes = [e.success for e in eps]
    last = outcomes[-WINDOW:]
    block = _rate_block(sum(outcomes), len(outcomes))
    block.update(
        success_rate_last20=_r(sum(last) / len(last)) if last else None,
        ci95_last20=[_r(x) for x in wilson(sum(last), len(last))], last20_episodes=len(last),
        env_steps=int(sum(e.steps for e in eps)), wall_time_s=None if data.wall_s is None else _r(data.wall_s, 2),
        aborted=len(data.aborted), aborted_reasons=dict(Counter(a["reason"] for a in data.aborted)),
        completed=data.session_done is not None, health_flagged=sum(1 for e in eps if e.health_ok is False))
    return block


def _weights(eps: list[Episode], learner: dict, policy: dict) -> dict | None:
    if not learner and not policy:
        return None

    def pick(values: dict, key: str):
        return _int_or_float(values[key]) if key in values else None

    return {"learner_published_version": pick(learner, "weight_version"),
            "learner_publishes": pick(learner, "publishes"),
            "versions_seen": sorted({int(e.learner["weight_version"]) for e in eps if "weight_version" in e.learner}),
            "policy_active_version": pick(policy, "weights_version"),
            "policy_accepted": pick(policy, "weights_accepted"), "policy_rejected": pick(policy, "weights_rejected")}


def _interventions(eps: list[Episode]) -> dict | None:
    if not any(e.policy_reported for e in eps):
        return None
    counts = [e.interventions for e in eps]
    return {"total": sum(counts), "episodes_with_interventions": sum(1 for c in counts if c),
            "per_episode_max": max(counts, default=0)}


def summarize(data: RunData) -> dict:
    """Everything summary.json holds except the plot list (added once the plots are written)."""
    eps = data.episodes
    learner, policy = _last(eps, "learner"), _last(eps, "policy")
    clips = safety_clips(eps)
    base, final = _eval_block(data.base), _eval_block(data.final)
    stages = data.run.get("stages")
    return {
        "run_dir": str(data.run_dir), "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "profile": data.run.get("profile"), "base_checkpoint": data.run.get("base_checkpoint"),
        "drift": data.run.get("drift"),
        "base": base, "final": final,
        "improvement": _r(final["success_rate"] - base["success_rate"])
        if base and final and base["episodes"] and final["episodes"] else None,
        "paired": paired(data.base, data.final),
        "session": _session(data),
        "learner": {k: _int_or_float(v) for k, v in learner.items()} if learner else None,
        "weights": _weights(eps, learner, policy),
        "interventions": _interventions(eps),
        "safety_clips": None if clips is None else {**{k: sum(v) for k, v in clips.items()},
                                                     "total": sum(sum(v) for v in clips.values())},
        "latency_ms": {"tick": latency(all_samples(eps, "tick_ms")),
                       "inference": latency(all_samples(eps, "inference_ms")),
                       "policy_reported": {k: policy[k] for k in ("inference_p50_ms", "inference_p99_ms")
                                           if k in policy} or None},
        "stages_s": {str(k): number(v) for k, v in stages.items()} if isinstance(stages, dict) else None,
        "store_check": store_check(data),
    }
