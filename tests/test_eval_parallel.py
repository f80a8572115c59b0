"""`robot-rl eval --parallel 2` through real ROS graphs: two sim + policy graphs on neighbouring
domains, merged into one evaluation; Ctrl-C while they start leaves no process behind."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from robot_rl.cli.eval_parallel import shares
from robot_rl.cli.evaluate import write_results
from robot_rl.config import load_profile
from policy_fixtures import tiny_checkpoints
from waiting import wait_until

PROFILE = load_profile("sim")


def _ours(marker: str) -> list[str]:
    """Processes (other than pytest and ps) whose command line mentions this test's tmp dir."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if marker in line and str(os.getpid()) != line.split()[0]
            and "pytest" not in line and " ps " not in line]


def test_episodes_are_shared_out_in_graph_order():
    assert shares(7, 2) == [4, 3] and shares(60, 2) == [30, 30] and shares(3, 3) == [1, 1, 1]


def test_a_stalled_episode_is_named_not_hidden_in_the_rate(tmp_path, capsys):
    results = [{"success": True, "steps": 40, "timed_out": False},
               {"success": False, "steps": 150, "timed_out": False},  # a failure: ran to --max-steps
               {"success": False, "steps": 3, "timed_out": True}]     # the sim stopped stepping
    args = argparse.Namespace(out=tmp_path / "eval.json")
    summary = write_results(args, results, {"checkpoint": "c"})
    assert summary["successes"] == 1 and summary["episodes"] == 3 and summary["stalled"] == 1
    assert "1 episode(s) stalled" in capsys.readouterr().out
    assert json.loads(args.out.read_text())["summary"]["stalled"] == 1


@pytest.mark.timeout(300)
def test_two_graphs_side_by_side_merge_into_one_evaluation(tmp_path, ros_domain):
    base = tiny_checkpoints(tmp_path / "base", PROFILE)["bc"]
    out, log = tmp_path / "eval.json", tmp_path / "graph.log"

    def eval_argv(episodes: int, out, log) -> list[str]:
        return [sys.executable, "-m", "robot_rl.cli.main", "eval", "--checkpoint", str(base), "--episodes",
                str(episodes), "--max-steps", "15", "--parallel", "2", "--seed", "500", "--drift", "waist=0.05",
                "--out", str(out), "--log", str(log)]

    result = subprocess.run(eval_argv(3, out, log), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"ROS domains {ros_domain}, {ros_domain + 1}" in result.stdout
    summary = json.loads(out.read_text())["summary"]
    assert summary["episodes"] == 3 and summary["parallel"] == 2 and summary["graph_episodes"] == [2, 1]
    assert summary["seed"] == 500 and summary["seeds"] == [500, 501] and summary["drift"] == "waist=0.05"
    results = json.loads(out.read_text())["results"]
    assert len(results) == 3 and summary["stalled"] == 0  # steps come from robot time: none missed
    assert all(r["success"] or r["steps"] == 15 for r in results), results
    second = log.with_name("graph.graph1.log")  # each graph's nodes log to their own file
    assert "waist drifted by +0.05" in log.read_text() and "waist drifted by +0.05" in second.read_text()
    assert wait_until(lambda: _ours(str(tmp_path)) == [], timeout=10), _ours(str(tmp_path))

    # interrupted once both graphs are up: exit 130, every graph stopped
    logs = [tmp_path / "x.log", tmp_path / "x.graph1.log"]
    proc = subprocess.Popen(eval_argv(40, tmp_path / "x.json", logs[0]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert wait_until(lambda: all(f.exists() and "sim robot up" in f.read_text() for f in logs), timeout=120)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest[-3000:]
    assert wait_until(lambda: _ours(str(tmp_path)) == [], timeout=10), _ours(str(tmp_path))
    assert not (tmp_path / "x.json").exists()
