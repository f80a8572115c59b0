"""Figures of the robot and data side: human interventions and safety clips per episode, control
loop and inference latency, and the health of the store's episodes.

Each function returns a Figure, or a string saying what was not recorded.
"""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from robot_rl.report.aggregate import SAFETY_COUNTERS, all_samples, latency, safety_clips
from robot_rl.report.figure import FAILURE, empty_panel, figure
from robot_rl.report.load import RunData


def interventions_and_clips(data: RunData):
    eps = data.episodes
    if not any(e.policy_reported or e.robot for e in eps):
        return "no policy or robot diagnostics in session.jsonl"
    clips = safety_clips(eps)
    fig, (ax_i, ax_s) = figure(rows=2, height=2.9, sharex=True)
    x = np.arange(1, len(eps) + 1)
    ax_i.bar(x, [e.interventions for e in eps], color="C1", width=0.85)
    ax_i.set_ylabel("steps under human control")
    ax_i.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_i.set_title("Human interventions and safety-envelope clips per episode")
    if clips:
        bottom = np.zeros(len(eps))
        for i, name in enumerate(n for n in SAFETY_COUNTERS if n in clips):
            ax_s.bar(x, clips[name], bottom=bottom, width=0.85, color=f"C{i + 2}", label=name)
            bottom += np.asarray(clips[name], dtype=float)
        ax_s.set_ylabel("clips / holds / rejects")
        ax_s.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_s.legend(fontsize=8, ncol=2)
    else:
        empty_panel(ax_s, "robot safety counters not recorded")
    ax_s.set_xlabel("episode")
    return fig


def latency_histograms(data: RunData):
    eps = data.episodes
    series = [("tick_ms", "control loop tick", "C0"), ("inference_ms", "policy inference", "C3")]
    if not any(all_samples(eps, name) for name, _, _ in series):
        return "no tick_ms / inference_ms samples in the policy diagnostics"
    fig, axes = figure(rows=2, height=2.9)
    for ax, (name, label, color) in zip(axes, series):
        values = all_samples(eps, name)
        if not values:
            empty_panel(ax, f"{name} not recorded")
            ax.set_title(f"{label} latency")
            continue
        stats = latency(values)
        ax.hist(values, bins=min(60, max(10, len(values) // 5)), color=color, alpha=0.8)
        for q, ls in (("p50", "-"), ("p99", "--")):
            ax.axvline(stats[q], color="0.2", ls=ls, lw=1.2, label=f"{q} {stats[q]:.2f} ms")
        ax.set_xlabel(f"{label} [ms]")
        ax.set_ylabel("samples")
        ax.set_title(f"{label} latency ({stats['n']} samples)")
        ax.legend(fontsize=8)
    return fig


def store_health(data: RunData):
    meta = data.store_meta
    if meta is None:
        return data.store_note or "no store"
    if not meta:
        return "the store has no committed episodes"
    rate_hz = data.store_attrs.get("control_rate_hz")
    index = np.array([m["index"] for m in meta])
    flagged = np.array([m["health"].get("ok") is False for m in meta])
    fig, (ax_len, ax_rate, ax_gap) = figure(rows=3, height=2.7, sharex=True)
    for i, source in enumerate(sorted({m["source"] for m in meta})):
        for ok, marker in ((True, "o"), (False, "x")):
            pick = [m for m in meta if m["source"] == source and m["success"] == ok]
            if pick:
                ax_len.scatter([m["index"] for m in pick], [m["length"] for m in pick], marker=marker, s=18,
                               color=f"C{i}", label=f"{source}, {'success' if ok else 'failure'}")
    ax_len.set_ylabel("length [steps]")
    ax_len.set_title(f"Store health: {len(meta)} committed episodes, {int(flagged.sum())} flagged below the health bar")
    ax_len.legend(fontsize=7, ncol=2)
    for ax, key, scale, label in ((ax_rate, "achieved_rate_hz", 1.0, "achieved rate [Hz]"),
                                  (ax_gap, "largest_gap_s", 1e3, "largest tick gap [ms]")):
        values = np.array([float(m["health"].get(key, np.nan)) * scale for m in meta])
        if np.isnan(values).all():
            empty_panel(ax, f"{key} not recorded in the episodes' health")
            continue
        ax.plot(index, values, marker=".", color="C0", lw=1)
        ax.scatter(index[flagged], values[flagged], color=FAILURE, zorder=3, s=25, label="flagged")
        if rate_hz:
            line = 0.9 * rate_hz if key == "achieved_rate_hz" else 3e3 / rate_hz
            ax.axhline(line, color="0.3", ls="--", lw=1,
                       label="health bar (90 % of control rate)" if scale == 1.0 else "health bar (3 periods)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax_gap.set_xlabel("store episode index")
    return fig
