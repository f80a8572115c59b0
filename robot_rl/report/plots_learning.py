"""Figures of the learning side: success over episodes and environment steps, episode lengths,
critic statistics and losses, the realised update-to-data ratio, weight versions over time.

Each function returns a Figure, or a string saying what was not recorded.
"""
from __future__ import annotations

import numpy as np

from robot_rl.report.aggregate import WINDOW, env_steps, learner_series, rolling_success, wall_times
from robot_rl.report.figure import FAILURE, SUCCESS, empty_panel, eval_lines, figure
from robot_rl.report.load import RunData


def _success(data: RunData, x: np.ndarray, xlabel: str, over: str):
    outcomes = [e.success for e in data.episodes]
    if not outcomes:
        return "no episodes in session.jsonl"
    rate, lo, hi = rolling_success(outcomes)
    fig, (ax,) = figure(height=4.2)
    ax.fill_between(x, lo, hi, step="post", color="C0", alpha=0.2, lw=0, label="Wilson 95 % band")
    ax.step(x, rate, where="post", color="C0", lw=2, label=f"session, rolling {WINDOW} episodes")
    ax.scatter(x, np.asarray(outcomes, dtype=float), s=10, c=[SUCCESS if s else FAILURE for s in outcomes],
               alpha=0.6, zorder=3, label="episode outcome")
    eval_lines(ax, data.base, data.final)
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate")
    ax.set_title(f"Success rate over {over} (rolling window {WINDOW}, Wilson 95 % band)")
    ax.legend(fontsize=8, loc="best")
    return fig


def success_episodes(data: RunData):
    return _success(data, np.arange(1, len(data.episodes) + 1), "episode", "episodes")


def success_env_steps(data: RunData):
    return _success(data, env_steps(data.episodes), "environment steps (cumulative)", "environment steps")


def episode_lengths(data: RunData):
    eps = data.episodes
    if not eps:
        return "no episodes in session.jsonl"
    fig, (ax,) = figure()
    x = np.arange(1, len(eps) + 1)
    ok = np.array([e.success for e in eps])
    steps = np.array([e.steps for e in eps])
    ax.bar(x[ok], steps[ok], color=SUCCESS, width=0.85, label="success (return 1)")
    ax.bar(x[~ok], steps[~ok], color=FAILURE, width=0.85, label="failure (return 0)")
    ax.set_xlabel("episode")
    ax.set_ylabel("episode length [control steps]")
    ax.set_title("Episode length and return (sparse reward: return = success)")
    ax.legend(fontsize=8)
    return fig


def critic(data: RunData):
    eps = data.episodes
    keys = sorted({k for e in eps for k in e.learner})
    q_keys = [k for k in keys if k.startswith("q_") or k == "target_mean"]
    loss_keys = [k for k in keys if k.endswith("_loss")]
    if "critic_updates" not in keys or not (q_keys or loss_keys):
        return "the learner reported no critic statistics (learner diagnostics missing from session.jsonl)"
    fig, (ax_q, ax_c, ax_a) = figure(rows=3, height=2.8, sharex=True)
    x, q = learner_series(eps, "q_mean", "critic_updates")
    if "q_min" in keys and "q_max" in keys:
        _, q_min = learner_series(eps, "q_min", "critic_updates")
        _, q_max = learner_series(eps, "q_max", "critic_updates")
        if len(q_min) == len(q) == len(q_max):
            ax_q.fill_between(x, q_min, q_max, color="C0", alpha=0.15, lw=0, label="q_min..q_max")
    if "q_std" in keys:
        _, q_std = learner_series(eps, "q_std", "critic_updates")
        if len(q_std) == len(q):
            ax_q.fill_between(x, q - q_std, q + q_std, color="C0", alpha=0.3, lw=0, label="q_mean ± q_std")
    for i, k in enumerate(k for k in q_keys if k not in ("q_min", "q_max", "q_std")):
        xs, ys = learner_series(eps, k, "critic_updates")
        ax_q.plot(xs, ys, marker=".", color=f"C{i}", label=k)
    if q_keys:
        ax_q.legend(fontsize=8)
    else:
        empty_panel(ax_q, "Q statistics not recorded")
    ax_q.set_ylabel("Q")
    ax_q.set_title("Critic Q statistics and losses vs critic updates")
    for ax, wanted in ((ax_c, ["critic_loss"]), (ax_a, [k for k in loss_keys if k != "critic_loss"])):
        present = [k for k in wanted if k in keys]
        for i, k in enumerate(present):
            xs, ys = learner_series(eps, k, "critic_updates")
            ax.plot(xs, ys, marker=".", color=f"C{i + 3}", label=k)
        if present:
            ax.legend(fontsize=8)
            ax.set_ylabel("loss")
        else:
            empty_panel(ax, f"{' / '.join(wanted) or 'actor loss'} not recorded yet (critic warm-up)")
    pulls = [k for k in ("residual_pull", "residual_abs_mean") if k in keys]
    if pulls:  # is the actor following a critic with a real slope, and how far has it gone?
        twin = ax_a.twinx()
        for i, k in enumerate(pulls):
            xs, ys = learner_series(eps, k, "critic_updates")
            twin.plot(xs, ys, ls="--", color=f"C{i + 6}", label=f"{k} (right)")
        twin.set_ylabel("normalised units")
        twin.legend(fontsize=8, loc="center right")
    ax_a.set_xlabel("critic updates")
    return fig


def utd(data: RunData):
    eps = data.episodes
    if not any("realized_utd" in e.learner for e in eps):
        return "the learner reported no realized_utd"
    steps = env_steps(eps)
    pairs = [(e.learner.get("env_steps", float(s)), e.learner["realized_utd"]) for e, s in zip(eps, steps)
             if "realized_utd" in e.learner]
    fig, (ax,) = figure()
    ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", ms=3, color="C2")
    target = data.run.get("utd")
    if isinstance(target, (int, float)):
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target UTD {target:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("environment steps (learner)")
    ax.set_ylabel("critic updates / env step")
    ax.set_title("Realised update-to-data ratio")
    return fig


def weight_versions(data: RunData):
    eps = data.episodes
    learner = [(i, e.learner["weight_version"]) for i, e in enumerate(eps) if "weight_version" in e.learner]
    policy = [(i, e.policy["weights_version"]) for i, e in enumerate(eps) if "weights_version" in e.policy]
    if not learner and not policy:
        return "neither the learner's weight_version nor the policy's weights_version was recorded"
    t = wall_times(eps)
    fig, (ax,) = figure()
    for series, label, color in ((learner, "published by the learner", "C0"), (policy, "active in the policy", "C3")):
        if series:
            ax.step([t[i] for i, _ in series], [v for _, v in series], where="post", marker=".", color=color,
                    label=label)
    ax.set_xlabel("wall time since session start [s]")
    ax.set_ylabel("residual weight version")
    ax.set_title("Residual weight version over wall time")
    ax.legend(fontsize=8)
    return fig
