"""`robot-rl demo` end to end at a tiny budget, through the real ROS graph: interrupted with Ctrl-C
(SIGINT) in the fine-tuning stage it leaves no stray node process and a store that passes its check;
`--resume` finishes the remaining stages and the summary agrees with the store."""
import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest

from robot_rl.data.store import Store
from robot_rl.data.store_check import check
from robot_rl.stats import wilson
from waiting import wait_until


def _stray(marker: str) -> list[str]:
    """Command lines of processes (other than pytest) that mention `marker` (the test's tmp dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if marker in line and str(os.getpid()) != line.split()[0]
            and "pytest" not in line and " ps " not in line]


@pytest.mark.timeout(900)
def test_demo_interrupted_then_resumed(tmp_path, ros_domain):
    run = tmp_path / "demo"
    argv = [sys.executable, "-m", "robot_rl.cli.main", "demo", "--run-dir", str(run), "--demos", "4",
            "--base-steps", "20", "--eval-episodes", "3", "--finetune-minutes", "1.5", "--preset", "tiny",
            "--drift", "waist=0.05"]
    # Ctrl-C in a terminal reaches a foreground process; a test run launched as a background job
    # (e.g. `make test &`) inherits SIGINT ignored, so give the demo the default disposition back.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:  # wait for the fine-tuning session to be under way
        lines.append(line)
        if "residual RL fine-tuning session" in line or time.monotonic() > deadline:
            break
    def fine_tuning_episodes() -> int:  # the session log is flushed per event
        log = run / "session.jsonl"
        return log.read_text().count('"episode_done"') if log.is_file() else 0

    assert wait_until(lambda: fine_tuning_episodes() >= 2, timeout=180, interval=0.2), "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-3000:]
    assert "--resume" in out
    wait_until(lambda: _stray(str(tmp_path)) == [], timeout=10, interval=0.2)
    assert _stray(str(tmp_path)) == [], out[-2000:]
    store = run / "demos.zarr"
    assert check(store) == []
    info = json.loads((run / "run.json").read_text())
    assert {"collect", "train_base", "eval_base"} <= set(info["done"]) and "finetune" not in info["done"]

    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "demo", "--resume", str(run)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "done earlier, skipped" in result.stdout and "demo summary" in result.stdout
    assert _stray(str(tmp_path)) == []
    assert check(store) == []
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "report.html").is_file()
    # the robot drifted after collection in every later stage (the sim node says so when it starts)
    assert summary["drift"] == "waist=0.05"
    assert re.search(r"robot drift \(after collection\) +waist=0\.05", result.stdout), result.stdout[-2000:]
    assert "waist drifted by +0.05" in (run / "graph.log").read_text()  # the last stage's log (eval_final)
    for name in ("base", "final"):
        evaluation = json.loads((run / f"eval_{name if name == 'base' else 'final'}.json").read_text())["summary"]
        assert summary[name]["successes"] == evaluation["successes"] and summary[name]["episodes"] == 3
    assert summary["paired"]["episodes"] == 3 and "same layouts, episode by episode" in result.stdout

    # the session's success rate, recomputed from the store's committed rollouts of this session
    events = [json.loads(x) for x in (run / "session.jsonl").read_text().splitlines()]
    indices = [e["index"] for e in events if e["event"] == "episode_done"]
    assert indices, "no fine-tuning episode completed"
    meta = {m["index"]: m for m in Store.open(store).episodes_meta()}
    assert all(meta[i]["source"] in ("rollout", "intervention") for i in indices)
    wins = sum(meta[i]["success"] for i in indices)
    assert summary["session"]["episodes"] == len(indices) and summary["session"]["successes"] == wins
    assert summary["session"]["ci95"] == pytest.approx(list(wilson(wins, len(indices))), abs=1e-3)
    assert summary["store_check"]["match"] is True
