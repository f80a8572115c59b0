"""`robot-rl report`: a synthetic fine-tuning run (a real store written with the Store/EpisodeWriter API,
a session log, eval files, run.json) → summary.json checked against numbers recomputed here from the
inputs, every PNG decoded and non-constant, and report.html rendered by a real headless Chromium."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from robot_rl.cli.main import main
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.schema import KeySpec
from robot_rl.data.store import Store
from robot_rl.report.aggregate import SAFETY_COUNTERS
from robot_rl.report.plots import PLOTS
from robot_rl.stats import wilson

N_JOINTS, RATE_HZ = 5, 30.0
KEYS = {"obs/joint_pos": KeySpec((N_JOINTS,), "float32"), "action": KeySpec((N_JOINTS,), "float32"),
        "reward": KeySpec((), "float32"), "intervention": KeySpec((), "bool"), "stamp": KeySpec((), "float64")}
ATTRS = {"control_rate_hz": RATE_HZ, "profile": {"name": "sim", "robot": {"driver": "mujoco_sim"}},
         "streams": [{"name": "joint_state", "shape": [N_JOINTS], "dtype": "float32", "rate_hz": 100.0}],
         "action": {"joint_names": [f"j{i}" for i in range(N_JOINTS)], "lower": [-1.0] * N_JOINTS,
                    "upper": [1.0] * N_JOINTS}}
N_DEMOS, N_OLD_ROLLOUTS, N_SESSION = 4, 2, 34
STAGES = {"collect": 612.5, "train_base": 880.0, "eval_base": 95.25, "finetune": 1830.0, "eval_final": 97.0}


def write_store(path: Path, rng: np.random.Generator) -> list[dict]:
    """Demos, rollouts of an earlier session, then this session's rollouts; returns what was written."""
    store = Store.create(path, keys=KEYS, attrs=ATTRS, durable=False)
    writer = EpisodeWriter(store, background=False)
    written, t0 = [], 1000.0
    for i in range(N_DEMOS + N_OLD_ROLLOUTS + N_SESSION):
        source = "demo" if i < N_DEMOS else "rollout"
        p_success = 0.9 if source == "demo" else 0.3 + 0.5 * i / (N_DEMOS + N_OLD_ROLLOUTS + N_SESSION)
        success = bool(rng.random() < p_success)
        length = int(rng.integers(20, 60)) if success else 60
        writer.begin(source=source)
        for t in range(length):
            writer.add_step({"obs/joint_pos": rng.uniform(-1, 1, N_JOINTS).astype(np.float32),
                             "action": rng.uniform(-1, 1, N_JOINTS).astype(np.float32),
                             "reward": float(success and t == length - 1), "intervention": False,
                             "stamp": t0 + t / RATE_HZ})
        slow = i % 9 == 5
        health = {"ok": not slow, "problems": ["rate 20.0 Hz < 90% of 30 Hz"] if slow else [],
                  "achieved_rate_hz": 20.0 if slow else float(rng.uniform(29.0, 30.0)),
                  "largest_gap_s": 0.2 if slow else float(rng.uniform(0.033, 0.05)), "ticks": length,
                  "invalid_ticks": 0}
        index = writer.commit(success=success, health=health)
        written.append({"index": index, "source": source, "success": success, "steps": length, "health_ok": not slow})
        t0 += length / RATE_HZ + 5.0
    writer.close()
    store.close()
    return written


def session_events(episodes: list[dict], rng: np.random.Generator) -> list[dict]:
    """What robot-rl finetune writes: episode_done with learner/policy/robot diagnostics (strings, as
    /diagnostics carries them, or numbers), one aborted episode, session_done."""
    events, wall, env, robot, version, successes = [], 0.0, 0, dict.fromkeys(
        ["commands_accepted", "commands_rejected", "position_clips", "velocity_limited", "stale_holds"], 0), 0, 0
    for n, ep in enumerate(episodes, 1):
        wall += ep["steps"] / RATE_HZ * 3 + float(rng.uniform(1, 3))
        env += ep["steps"]
        successes += ep["success"]
        version += int(rng.integers(0, 3))
        for k in robot:
            robot[k] += int(rng.integers(0, 40 if k == "commands_accepted" else 3))
        learner = {"critic_loss": f"{0.5 / n:.5f}", "q_mean": f"{0.02 * n:.4f}", "q_min": f"{0.02 * n - 0.1:.4f}",
                   "q_max": f"{0.02 * n + 0.1:.4f}", "target_mean": f"{0.02 * n:.4f}", "env_steps": str(env),
                   "critic_updates": str(2 * env), "actor_updates": str(max(0, env - 100)), "realized_utd": "2.0",
                   "online_size": str(env), "demo_size": "160", "weight_version": str(version),
                   "publishes": str(version),
                   "resumed": "false"}
        if n > 3:
            learner["actor_loss"] = f"{-0.02 * n:.4f}"
        if n == 7:
            learner = {}  # the diagnostics read timed out for this episode
        inference = rng.gamma(4.0, 2.0, int(rng.integers(5, 12))).round(3).tolist()
        tick = rng.gamma(3.0, 0.4, ep["steps"]).round(3).tolist()
        policy = {"ticks": str(env), "inference_p50_ms": f"{np.percentile(inference, 50):.2f}",
                  "inference_p99_ms": f"{np.percentile(inference, 99):.2f}", "weights_accepted": str(version),
                  "weights_rejected": "0", "weights_version": str(max(0, version - 1)),
                  "weights_last_reject_reason": "",
                  "inference_ms": json.dumps(inference) if n % 2 else inference, "tick_ms": tick}
        if n % 5 != 0:  # absent → 0
            policy["interventions"] = int(rng.integers(0, 4)) if n % 3 == 0 else 0
        events.append({"event": "episode_done", "index": ep["index"], "success": ep["success"], "steps": ep["steps"],
                       "seconds": round(ep["steps"] / RATE_HZ * 3, 2), "health_ok": ep["health_ok"],
                       "session_episodes": n, "session_success_rate": round(successes / n, 4),
                       "stamp": 1.7e9 + wall, "wall_s": round(wall, 2), "learner": learner, "policy": policy,
                       "robot": {k: str(v) for k, v in robot.items()}})
        if n == 10:
            events.append({"event": "aborted", "reason": "no control step for 10 s", "stamp": 1.7e9 + wall + 1,
                           "wall_s": round(wall + 1, 2)})
    events.append({"event": "session_done", "episodes": len(episodes),
                   "success_rate": round(successes / len(episodes), 4),
                   "stamp": 1.7e9 + wall + 2, "wall_s": round(wall + 2.5, 2)})
    return events


def write_eval(path: Path, successes: list[bool], seed: int = 1000, parallel: int | None = None) -> None:
    k, n = sum(successes), len(successes)
    lo, hi = wilson(k, n)
    results = [{"success": s, "steps": 40 if s else 150, "timed_out": not s} for s in successes]
    path.write_text(json.dumps({"summary": {"checkpoint": "runs/bc/final", "episodes": n, "successes": k,
                                            "success_rate": k / n, "ci95": [round(lo, 4), round(hi, 4)],
                                            "mean_steps": sum(r["steps"] for r in results) / n, "seed": seed,
                                            **({"parallel": parallel} if parallel else {})},
                                "results": results}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("report")
    run = root / "finetune-run"
    run.mkdir()
    written = write_store(root / "sim.zarr", rng)
    events = session_events([w for w in written if w["source"] == "rollout"][N_OLD_ROLLOUTS:], rng)
    (run / "session.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    write_eval(run / "eval_base.json", [bool(x) for x in rng.random(50) < 0.45])
    write_eval(run / "eval_final.json", [bool(x) for x in rng.random(50) < 0.75])
    (run / "run.json").write_text(json.dumps({"store": str(root / "sim.zarr"), "base_checkpoint": "runs/bc/final",
                                              "profile": "sim", "stages": STAGES}))
    assert main(["report", str(run)]) == 0
    return run


def _rate(successes: list[bool]) -> tuple[float, list[float]]:
    return sum(successes) / len(successes), [round(x, 4) for x in wilson(sum(successes), len(successes))]


def test_summary_numbers_match_the_inputs(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(line) for line in (run_dir / "session.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "episode_done"]
    run = json.loads((run_dir / "run.json").read_text())
    store = Store.open(run["store"], "r")
    meta = store.episodes_meta()
    store.close()

    # base / final from the per-episode eval results
    for name in ("base", "final"):
        results = json.loads((run_dir / f"eval_{name}.json").read_text())["results"]
        rate, ci = _rate([r["success"] for r in results])
        assert summary[name]["episodes"] == len(results)
        assert summary[name]["success_rate"] == pytest.approx(rate, abs=1e-4)
        assert summary[name]["ci95"] == pytest.approx(ci, abs=1e-4)
    gain = summary["final"]["success_rate"] - summary["base"]["success_rate"]
    assert summary["improvement"] == pytest.approx(gain, abs=2e-4)
    # same seed: compared layout by layout
    base, final = ([r["success"] for r in json.loads((run_dir / f"eval_{n}.json").read_text())["results"]]
                   for n in ("base", "final"))
    gained = sum(f and not b for b, f in zip(base, final))
    lost = sum(b and not f for b, f in zip(base, final))
    assert summary["paired"]["gained"] == gained and summary["paired"]["lost"] == lost and gained + lost > 0
    assert 0 < summary["paired"]["mcnemar_p"] <= 1

    # session success from the store's labels of the committed rollouts the session lists
    labels = [meta[e["index"]]["success"] for e in done]
    assert all(meta[e["index"]]["source"] == "rollout" for e in done)
    rate, ci = _rate(labels)
    s = summary["session"]
    assert s["episodes"] == len(done) == N_SESSION
    assert s["success_rate"] == pytest.approx(rate, abs=1e-4) and s["ci95"] == pytest.approx(ci, abs=1e-4)
    assert s["success_rate_last20"] == pytest.approx(sum(labels[-20:]) / 20, abs=1e-4)
    assert s["env_steps"] == sum(meta[e["index"]]["length"] for e in done)
    assert s["wall_time_s"] == pytest.approx(max(e["wall_s"] for e in events))
    assert s["aborted"] == 1 and s["completed"] is True
    check = summary["store_check"]
    assert check["recorded"] and check["match"] and check["mismatches"] == []
    assert check["checked_episodes"] == N_SESSION and check["store_episodes"] == len(meta)
    assert check["store_success_rate"] == pytest.approx(rate, abs=1e-4)
    assert check["store_episodes_by_source"] == {"demo": N_DEMOS, "rollout": N_OLD_ROLLOUTS + N_SESSION}
    assert check["flagged_episodes"] == sum(1 for m in meta if not m["health"]["ok"])

    # learner counters: the newest non-empty learner block; weights; interventions; safety clips
    last_learner = [e["learner"] for e in done if e["learner"]][-1]
    for key in ("env_steps", "critic_updates", "actor_updates", "online_size", "demo_size", "weight_version",
                "publishes"):
        assert summary["learner"][key] == int(last_learner[key]), key
    assert summary["learner"]["realized_utd"] == pytest.approx(2.0)
    assert summary["weights"]["learner_published_version"] == int(last_learner["weight_version"])
    assert summary["weights"]["policy_active_version"] == int(done[-1]["policy"]["weights_version"])
    versions = {int(e["learner"]["weight_version"]) for e in done if e["learner"]}
    assert summary["weights"]["versions_seen"] == sorted(versions)
    interventions = [int(e["policy"].get("interventions", 0)) for e in done]
    assert summary["interventions"]["total"] == sum(interventions) > 0
    assert summary["interventions"]["episodes_with_interventions"] == sum(1 for i in interventions if i)
    clips = summary["safety_clips"]
    for key in SAFETY_COUNTERS:
        assert clips[key] == int(done[-1]["robot"][key]), key  # counters start at 0: increments sum to the last value
    assert clips["total"] == sum(clips[k] for k in SAFETY_COUNTERS)

    # latency percentiles over every sample; stages from run.json
    def samples(name):
        out = []
        for e in done:
            v = e["policy"][name]
            out += json.loads(v) if isinstance(v, str) else v
        return np.array(out)
    for name, key in (("tick_ms", "tick"), ("inference_ms", "inference")):
        values = samples(name)
        block = summary["latency_ms"][key]
        assert block["n"] == len(values)
        for q in (50, 90, 99):
            assert block[f"p{q}"] == pytest.approx(np.percentile(values, q), abs=1e-3)
    assert summary["stages_s"] == STAGES
    assert summary["not_recorded"] == {}
    assert set(summary["plots"]) == {p.name for p in PLOTS}


def test_every_png_is_a_real_figure(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    pngs = sorted((run_dir / "report").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(p.name for p in PLOTS)
    for png in pngs:
        assert summary["plots"][png.stem] == f"report/{png.name}"
        assert png.stat().st_size > 10_000, png
        image = cv2.imread(str(png), cv2.IMREAD_COLOR)
        assert image is not None, f"{png} does not decode"
        assert image.shape[0] >= 300 and image.shape[1] >= 600, (png, image.shape)
        assert image.std() > 5 and len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{png} looks blank"


def test_html_references_every_plot_relatively(run_dir: Path):
    page = (run_dir / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(f"report/{p.name}.png" for p in PLOTS)
    assert "<script" not in page.lower() and "not recorded" not in page
    for plot in PLOTS:
        assert html.escape(plot.title) in page and html.escape(plot.explanation) in page


@pytest.fixture(scope="session")
def chromium() -> tuple[str | None, str]:
    """(chromium binary, "") — installed with apt-get when missing and we are root — or (None, why not).
    The test FAILS on None (never skips): rendering in a real browser is part of the report's contract."""
    exe = shutil.which("chromium")
    if exe:
        return exe, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, ("chromium is not installed and this test cannot install it (needs root and apt-get); "
                      "install the Debian package 'chromium'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-q", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=250)
    if result.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-q"], env=env, capture_output=True,
                       timeout=120)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=250)
    exe = shutil.which("chromium")
    if not exe:
        return None, (f"apt-get install chromium failed (exit {result.returncode}):\n{result.stdout[-1500:]}\n"
                      f"{result.stderr[-1500:]}")
    return exe, ""


def _chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--allow-file-access-from-files", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})


CHECKER = """<script>
window.addEventListener("load", () => {
  const rows = [...document.images].map(img => {
    let varied = null;
    try {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length && seen.size < 50; i += 4 * 97) seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
      varied = seen.size;
    } catch (e) { varied = "error: " + e; }
    return {src: img.getAttribute("src"), complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
            colors: varied};
  });
  const out = document.createElement("pre"); out.id = "img-check";
  out.textContent = JSON.stringify(rows);
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.timeout(300)
def test_chromium_renders_the_report_with_every_image(run_dir: Path, chromium, tmp_path: Path):
    chromium, problem = chromium
    if chromium is None:
        pytest.fail(problem)
    page = (run_dir / "report.html").read_text()
    checker = run_dir / "render_check.html"  # beside report.html: the same relative image paths resolve
    checker.write_text(page.replace("</body>", CHECKER + "\n</body>"))
    try:
        result = _chromium(chromium, tmp_path, "--virtual-time-budget=5000", "--dump-dom", checker.as_uri())
    finally:
        checker.unlink()
    found = re.search(r'<pre id="img-check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"chromium produced no image check (exit {result.returncode}):\n{result.stderr[-2000:]}"
    rows = json.loads(html.unescape(found.group(1)))
    assert sorted(r["src"] for r in rows) == sorted(f"report/{p.name}.png" for p in PLOTS)
    for row in rows:
        png = cv2.imread(str(run_dir / row["src"]))
        assert row["complete"] and (row["h"], row["w"]) == png.shape[:2], f"chromium did not load {row}"
        assert isinstance(row["colors"], int) and row["colors"] > 5, f"chromium decoded {row['src']} as blank: {row}"

    shot = tmp_path / "report.png"
    result = _chromium(chromium, tmp_path, "--window-size=1100,3000", "--hide-scrollbars",
                       f"--screenshot={shot}", (run_dir / "report.html").as_uri())
    assert shot.is_file(), f"no screenshot (exit {result.returncode}):\n{result.stderr[-2000:]}"
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (3000, 1100)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 100, "the rendered page is nearly uniform"


def test_malformed_session_line_is_a_one_line_error(tmp_path: Path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    good = {"event": "episode_done", "index": 0, "success": True, "steps": 12, "wall_s": 3.0}
    (run / "session.jsonl").write_text(json.dumps(good) + "\n" + '{"event": "episode_done", "index": 1,\n')
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robot-rl: error: ") and len(err.splitlines()) == 1, err
    assert str(run / "session.jsonl") in err and "line 2" in err and "not valid JSON" in err
    assert not (run / "report.html").exists()


def test_missing_pieces_say_not_recorded(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "episode_done", "index": i, "success": i % 3 == 0, "steps": 30 + i, "wall_s": 4.0 * i}
             for i in range(6)]
    (run / "session.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert main(["report", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["base"] is None and summary["final"] is None and summary["learner"] is None
    assert summary["store_check"]["recorded"] is False and summary["safety_clips"] is None
    assert summary["interventions"] is None and summary["latency_ms"]["tick"] is None
    assert summary["session"]["success_rate"] == pytest.approx(2 / 6, abs=1e-4)
    drawn = {"success_episodes", "success_env_steps", "episode_lengths"}
    assert set(summary["not_recorded"]) == {p.name for p in PLOTS} - drawn
    assert sorted(p.stem for p in (run / "report").glob("*.png")) == sorted(drawn)
    page = (run / "report.html").read_text()
    assert page.count("not recorded") >= len(summary["not_recorded"])


def test_store_label_mismatch_is_recorded(run_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report", "report.html", "summary.json"))
    events = [json.loads(line) for line in (run / "session.jsonl").read_text().splitlines()]
    flipped = next(e for e in events if e["event"] == "episode_done")
    flipped["success"] = not flipped["success"]
    (run / "session.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    store = json.loads((run / "run.json").read_text())["store"]
    assert main(["report", str(run), "--store", store]) == 0
    check = json.loads((run / "summary.json").read_text())["store_check"]
    assert check["match"] is False and len(check["mismatches"]) == 1
    assert check["mismatches"][0]["index"] == flipped["index"]
    assert "success label differs" in check["mismatches"][0]["problem"]
    assert main(["report", str(run), "--store", str(tmp_path / "nope.zarr")]) == 2


def test_paired_comparison_needs_the_same_layouts(tmp_path: Path):
    from robot_rl.report.aggregate import paired
    from robot_rl.report.load import read_eval

    write_eval(tmp_path / "a.json", [False] * 18 + [True] * 2 + [True] * 5)
    write_eval(tmp_path / "b.json", [True] * 18 + [False] * 2 + [True] * 5)
    block = paired(read_eval(tmp_path / "a.json"), read_eval(tmp_path / "b.json"))
    # 18 gained, 2 lost: p = 2 * (C(20,0) + C(20,1) + C(20,2)) / 2**20
    assert block == {"episodes": 25, "seed": 1000, "gained": 18, "lost": 2, "mcnemar_p": float(f"{422 / 2**20:.3g}")}
    write_eval(tmp_path / "c.json", [True] * 25, seed=7)  # other layouts: no pairing
    assert paired(read_eval(tmp_path / "a.json"), read_eval(tmp_path / "c.json")) is None
    # same seed, but two graphs side by side (the second on seed + 1): other layouts too
    write_eval(tmp_path / "d.json", [True] * 25, parallel=2)
    assert paired(read_eval(tmp_path / "a.json"), read_eval(tmp_path / "d.json")) is None
    write_eval(tmp_path / "e.json", [False] * 25, parallel=2)
    block = paired(read_eval(tmp_path / "e.json"), read_eval(tmp_path / "d.json"))
    assert block["gained"] == 25 and block["mcnemar_p"] == float(f"{2 / 2**25:.3g}") > 0  # not rounded to 0
