"""Shared figure helpers. Figures are built with matplotlib's object API (`Figure`, Agg canvas), never
pyplot, so writing a report changes no global backend state and leaks no open figures."""
from __future__ import annotations

from matplotlib.figure import Figure

from robot_rl.report.load import EvalResult

SUCCESS, FAILURE = "#2a9d4b", "#d1495b"
BASE, FINAL = "C1", "C4"


def figure(rows: int = 1, height: float = 3.6, width: float = 9.0, sharex: bool = False):
    """A constrained-layout figure with `rows` stacked axes (a list, even for one row)."""
    fig = Figure(figsize=(width, height * rows), layout="constrained", dpi=100)
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig, list(axes)


def eval_lines(ax, base: EvalResult | None, final: EvalResult | None) -> None:
    """The base and final evaluations as horizontal lines with their Wilson 95 % bands."""
    for result, label, color in ((base, "base eval", BASE), (final, "final eval", FINAL)):
        if result is None:
            continue
        lo, hi = result.ci95
        ax.axhspan(lo, hi, color=color, alpha=0.12, lw=0)
        ax.axhline(result.success_rate, color=color, ls="--", lw=1.6,
                   label=f"{label}: {100 * result.success_rate:.0f} % ({100 * lo:.0f}-{100 * hi:.0f} %, "
                         f"n={result.episodes})")


def empty_panel(ax, text: str) -> None:
    """A panel whose data was not recorded: says so instead of showing empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.tick_params(left=False, labelleft=False)  # x stays: it may be shared with other panels
