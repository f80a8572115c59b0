"""`plot`: one PNG of an episode's low-dim streams over time, for eyeballing a demo or a rollout
(does the arm follow the command, when does the gripper touch, where did the human step in)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robot_rl.data.tools.common import check_episode, open_store, relative_time, require_keys, tactile_keys

N_INSTANTS = 6  # taxel images shown per tactile sensor


def plot_episode(path: str | os.PathLike, episode: int, out: str | os.PathLike | None = None) -> Path:
    """Write the plot and return its path (default: <store>_ep<I>.png next to the store)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = open_store(path)
    episode = check_episode(store, episode)
    require_keys(store, ["stamp"], "the time axis comes from the capture stamps")
    out = Path(out) if out else store.path.with_name(f"{store.path.stem}_ep{episode}.png")
    tactile = tactile_keys(store)
    lowdim = [k for k in ("obs/joint_pos", "obs/joint_vel", "action", "reward", "intervention", "stamp")
              if k in store.keys]
    data = store.read_episode(episode, [*lowdim, *tactile.values()])
    t = relative_time(store, data)
    names = list((store.attrs.get("action") or {}).get("joint_names") or [])

    panels = [p for p, need in (("pos", "obs/joint_pos" in data or "action" in data), ("vel", "obs/joint_vel" in data),
                                ("force", bool(tactile)), ("taxels", bool(tactile)),
                                ("reward", "reward" in data or "intervention" in data)) if need]
    heights = {"pos": 3, "vel": 2, "force": 2, "taxels": 1.1 * len(tactile), "reward": 1.5}
    height = 1.3 * sum(heights[p] for p in panels) + 1.2
    fig = plt.figure(figsize=(11, height))
    grid = fig.add_gridspec(len(panels), 1, height_ratios=[heights[p] for p in panels], hspace=0.45,
                            top=1 - 0.7 / height, bottom=0.6 / height, left=0.08, right=0.98)
    meta = store.episodes_meta()[episode]
    fig.suptitle(f"{store.path.name} episode {episode}: {meta['source']}, {meta['length']} steps, "
                 f"{'success' if meta['success'] else 'failure'}", fontsize=11)
    axes = []
    for row, panel in enumerate(panels):
        if panel == "taxels":
            _taxel_strip(fig, grid[row], store, data, tactile, t)
            continue
        ax = fig.add_subplot(grid[row], sharex=axes[0] if axes else None)
        axes.append(ax)
        if panel == "pos":
            _joint_lines(ax, t, data, names)
        elif panel == "vel":
            for j in range(data["obs/joint_vel"].shape[1]):
                ax.plot(t, data["obs/joint_vel"][:, j], color=f"C{j % 10}", lw=1)
            ax.set_ylabel("joint vel")
        elif panel == "force":
            for c, (name, key) in enumerate(tactile.items()):
                ax.plot(t, data[key].reshape(len(t), -1).sum(axis=1), color=f"C{c}", lw=1.2, label=name)
            ax.set_ylabel("tactile total")
            ax.legend(fontsize=7, loc="upper right")
        else:
            _reward(ax, t, data)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time since episode start [s] (capture stamps)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _joint_lines(ax, t, data, names) -> None:
    pos, act = data.get("obs/joint_pos"), data.get("action")
    n = (pos if pos is not None else act).shape[1]
    for j in range(n):
        label = names[j] if j < len(names) else f"joint {j}"
        if pos is not None:
            ax.plot(t, pos[:, j], color=f"C{j % 10}", lw=1.2, label=label)
        if act is not None:
            ax.plot(t, act[:, j], color=f"C{j % 10}", lw=1, ls="--", label=None if pos is not None else label)
    ax.set_ylabel("joint pos (—)\naction (- -)")
    ax.legend(fontsize=7, ncol=min(n, 7), loc="upper right")


def _reward(ax, t, data) -> None:
    if "intervention" in data and data["intervention"].any():
        ax.fill_between(t, 0, 1, where=data["intervention"].astype(bool), step="mid", color="C3", alpha=0.25,
                        transform=ax.get_xaxis_transform(), label="intervention")
    if "reward" in data:
        ax.step(t, data["reward"], where="mid", color="C2", lw=1.2, label="reward")
    ax.set_ylabel("reward")
    ax.legend(fontsize=7, loc="upper left")


def _taxel_strip(fig, cell, store, data, tactile: dict[str, str], t: np.ndarray) -> None:
    """Taxel images of each sensor at a few evenly spaced instants (shared colour scale per sensor)."""
    steps = np.unique(np.linspace(0, len(t) - 1, min(N_INSTANTS, len(t))).round().astype(int))
    sub = cell.subgridspec(len(tactile), len(steps), wspace=0.05, hspace=0.35)
    for r, (name, key) in enumerate(tactile.items()):
        frames = data[key]
        if frames.ndim != 3:  # a scalar or a 1-D taxel row per step: show it as one row
            frames = frames.reshape(len(frames), 1, -1)
        vmin, vmax = float(frames.min()), float(frames.max())
        for c, step in enumerate(steps):
            ax = fig.add_subplot(sub[r, c])
            ax.imshow(frames[step], cmap="viridis", vmin=vmin, vmax=max(vmax, vmin + 1e-9), aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t[step]:.2f}s", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
