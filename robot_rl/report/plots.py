"""The report's figures in page order: which file, which title, the one-line explanation, and the
function that draws it. `write_plots` saves each as a PNG under RUN_DIR/report/ and records the
sections whose data was not recorded (no PNG, the page says so)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robot_rl.report import plots_learning as learning
from robot_rl.report import plots_robot as robot
from robot_rl.report.load import RunData


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    explanation: str
    draw: Callable


PLOTS = [
    Plot("success_episodes", "Success rate over episodes",
         "Trailing-window success of the session's rollouts (exploration on) with its Wilson 95 % band, against "
         "the base and final evaluations (dashed, with their bands).", learning.success_episodes),
    Plot("success_env_steps", "Success rate over environment steps",
         "The same rolling success rate against cumulative environment steps, the budget residual RL spends.",
         learning.success_env_steps),
    Plot("episode_lengths", "Episode length and return",
         "Control steps per episode, green for success (return 1) and red for failure (return 0): the reward "
         "is sparse.",
         learning.episode_lengths),
    Plot("critic", "Critic Q statistics and losses",
         "Learner diagnostics at each episode end against critic updates: diverging Q values or losses show "
         "here first.",
         learning.critic),
    Plot("utd", "Realised update-to-data ratio",
         "Critic updates per environment step the learner actually achieved; it throttles rather than run ahead.",
         learning.utd),
    Plot("weight_versions", "Residual weight versions",
         "Versions the learner published and the version the policy was running, over wall time.",
         learning.weight_versions),
    Plot("interventions", "Interventions and safety clips",
         "Steps a human took over, and the robot envelope's position clips, velocity limits, stale holds and rejected "
         "commands added during each episode.", robot.interventions_and_clips),
    Plot("latency", "Control-loop and inference latency",
         "Histograms of the policy node's control tick and inference times over the whole session (p50 solid, "
         "p99 dashed).",
         robot.latency_histograms),
    Plot("store_health", "Store health",
         "Every committed store episode: length by source (x = failure), achieved recording rate and largest tick gap "
         "against the health bar; flagged episodes in red.", robot.store_health),
]


def write_plots(data: RunData, out_dir: Path) -> list[dict]:
    """Draw every plot; returns per plot {name, title, explanation, file (relative) | None, missing}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for plot in PLOTS:
        result = plot.draw(data)
        path = out_dir / f"{plot.name}.png"
        section = {"name": plot.name, "title": plot.title, "explanation": plot.explanation, "file": None,
                   "missing": None}
        if isinstance(result, str):
            path.unlink(missing_ok=True)  # a PNG of an earlier report would contradict "not recorded"
            section["missing"] = result
        else:
            tmp = path.with_name(f".{path.name}.tmp")
            result.savefig(tmp, format="png")
            os.replace(tmp, path)
            section["file"] = f"{out_dir.name}/{path.name}"
        sections.append(section)
    return sections
