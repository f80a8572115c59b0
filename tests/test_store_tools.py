"""`robot-rl store …` tools on small synthetic stores recorded with EpisodeWriter (sim layout,
two 64×64 cameras): info, check exit codes, repair, plot, video, LeRobot export, merge."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from robot_rl.cli.main import main
from robot_rl.config import load_profile
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import store_layout
from robot_rl.data.store import Store

STEPS, RATE = 20, 10.0


def sim_profile(cameras: bool = True):
    p = load_profile("sim")
    cams = [dataclasses.replace(c, width=64, height=64) for c in p.cameras] if cameras else []
    return dataclasses.replace(p, cameras=cams)


def make_store(path: Path, n_episodes: int, seed: int, cameras: bool = True) -> list[dict]:
    """Record episodes step by step; returns what went in (with the meta given)."""
    keys, attrs = store_layout(sim_profile(cameras))
    rng = np.random.default_rng(seed)
    episodes = []
    with Store.create(path, keys=keys, attrs=attrs, durable=False) as store:
        writer = EpisodeWriter(store, flush_steps=8, background=False)
        for e in range(n_episodes):
            t = np.arange(STEPS)
            # jittered capture stamps: timestamps must come from them, not from frame_index / fps
            stamp = 1000.0 * (seed + 1) + 7.0 * e + t / RATE + rng.uniform(0, 0.02, STEPS)
            pos = (np.sin(t[:, None] / 4 + np.arange(6)) + e).astype(np.float32)
            data = {k: np.zeros((STEPS, *s.shape), s.dtype) for k, s in keys.items()}
            action = pos + rng.normal(0, 0.05, pos.shape).astype(np.float32)
            residual = rng.normal(0, 0.01, pos.shape).astype(np.float32)
            data.update({"obs/joint_pos": pos, "obs/joint_vel": np.gradient(pos, axis=0) * RATE, "action": action,
                         "base_action": action - residual, "residual": residual,
                         "reward": (t == STEPS - 1).astype(np.float32) * (e % 2 == 0),
                         "intervention": (t > 10) & (t < 14), "stamp": stamp})
            for k in keys:
                if k.startswith("obs/tactile_"):
                    data[k] = rng.random((STEPS, *keys[k].shape)).astype(np.float32) * t[:, None, None]
                elif k.startswith("obs/camera_"):  # smooth frames (mp4v-friendly), different per step
                    ramp = np.linspace(0, 120, 64, dtype=np.float32)
                    base = ramp[None, :, None, None] + ramp[None, None, :, None] + 5 * t[:, None, None, None]
                    data[k] = np.clip(base + (60 if "wrist" in k else 0) + 10 * np.arange(3), 0, 255).astype(np.uint8)
            writer.begin(source=["demo", "rollout"][e % 2])
            for i in range(STEPS):
                writer.add_step({k: v[i] for k, v in data.items()})
            health = {"ok": e != 1, "problems": [] if e != 1 else ["largest gap 300 ms"]}
            meta = {"success": e % 2 == 0, "health": health,
                    "base_ckpt": f"ckpt{seed}{e}"}
            writer.commit(meta["success"], meta["health"], base_ckpt=meta["base_ckpt"])
            episodes.append({**data, **meta})
        writer.close()
    return episodes


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    episodes = make_store(root / "a.zarr", 3, seed=0)
    return root, root / "a.zarr", episodes


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["store", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def copy(made, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(made[1], dst)
    return dst


def test_info_lists_episodes_and_totals(made, capsys):
    code, out, _ = run(capsys, "info", made[1])
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit() or line.strip()[:1].isdigit()]
    assert [r[:3] for r in rows[:3]] == [["0", "demo", "20"], ["1", "rollout", "20"], ["2", "demo", "20"]]
    assert "largest gap 300 ms" in out and "ckpt00" in out
    assert "episodes: 3" in out and "steps:    60" in out and "success:  2/3" in out
    assert "obs/camera_front" in out and "(64, 64, 3)" in out


def test_check_exit_codes(made, tmp_path, capsys):
    assert run(capsys, "check", made[1], "--deep")[0] == 0
    bad = copy(made, tmp_path)
    zarr.open_array(bad / "meta" / "episode_duration", mode="r+")[1] = -1.0
    code, out, _ = run(capsys, "check", bad)
    assert code == 1 and "episode_duration" in out
    (tmp_path / "empty").mkdir()
    code, out, _ = run(capsys, "check", tmp_path / "empty")
    assert code == 2 and "not a store" in out
    assert run(capsys, "check", tmp_path / "missing")[0] == 2


def test_repair_removes_uncommitted_rows(made, tmp_path, capsys):
    path = copy(made, tmp_path)
    zarr.open_array(path / "data" / "reward", mode="r+").append(np.ones(5, np.float32))  # a killed writer's rows
    (path / "data" / "reward" / "c.9.partial").write_bytes(b"x")
    assert run(capsys, "check", path)[0] == 1
    code, out, _ = run(capsys, "repair", path)
    assert code == 0 and "removed 5 uncommitted row(s) of data/reward" in out and "1 stray temp file" in out
    assert run(capsys, "check", path, "--deep")[0] == 0
    assert run(capsys, "repair", tmp_path / "nope")[0] == 2


def test_plot_writes_a_real_png(made, tmp_path, capsys):
    out_png = tmp_path / "ep1.png"
    code, out, _ = run(capsys, "plot", made[1], "--episode", 1, "--out", out_png)
    assert code == 0 and str(out_png) in out
    assert out_png.stat().st_size > 20_000
    img = cv2.imread(str(out_png))
    assert img is not None and img.shape[0] > 400 and img.std() > 10
    code, _, err = run(capsys, "plot", made[1], "--episode", 7)
    assert code == 2 and "no episode 7" in err and err.count("\n") == 1


def test_video_frames_and_size(made, tmp_path, capsys):
    out_mp4 = tmp_path / "ep2.mp4"
    code, out, _ = run(capsys, "video", made[1], "--episode", 2, "--out", out_mp4, "--fps", 15)
    assert code == 0 and "20 frames 128x64" in out
    cap = cv2.VideoCapture(str(out_mp4))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == STEPS and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == STEPS and frames[0].shape == (64, 128, 3)
    ep = made[2][2]  # below the overlay: left half is the front camera, right half the wrist camera
    for i in (0, STEPS - 1):
        assert np.abs(frames[i][32:, :64].astype(int) - ep["obs/camera_front"][i][32:]).mean() < 6
        assert np.abs(frames[i][32:, 64:].astype(int) - ep["obs/camera_wrist"][i][32:]).mean() < 6


def test_export_lerobot_reads_back(made, tmp_path, capsys):
    import pyarrow.parquet as pq

    out_dir = tmp_path / "lerobot"
    code, out, _ = run(capsys, "export-lerobot", made[1], out_dir, "--task", "pick the cube")
    assert code == 0 and "v2.1" in out
    info = json.loads((out_dir / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_videos"]) == (3, 60, 6)
    assert info["features"]["observation.state"]["shape"] == [6]
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    episodes = [json.loads(line) for line in (out_dir / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [e["length"] for e in episodes] == [STEPS] * 3 and episodes[0]["tasks"] == ["pick the cube"]
    stats = [json.loads(line) for line in (out_dir / "meta" / "episodes_stats.jsonl").read_text().splitlines()]
    assert stats[0]["stats"]["action"]["count"] == [STEPS]
    assert np.array(stats[0]["stats"]["observation.images.front"]["mean"]).shape == (3, 1, 1)
    index = 0
    for i, ep in enumerate(made[2]):
        table = pq.read_table(out_dir / info["data_path"].format(episode_chunk=0, episode_index=i))
        assert {"observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index",
                "next.reward", "next.done"} <= set(table.column_names)
        assert table.num_rows == STEPS
        col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        assert np.array_equal(np.stack(col["observation.state"]), ep["obs/joint_pos"])
        assert np.array_equal(np.stack(col["action"]), ep["action"])
        rel = ep["stamp"] - ep["stamp"][0]
        assert np.allclose(col["timestamp"], rel, atol=1e-5)
        assert not np.allclose(col["timestamp"], np.arange(STEPS) / 10.0, atol=1e-3)  # real stamps, jittered
        assert col["frame_index"].tolist() == list(range(STEPS)) and set(col["episode_index"]) == {i}
        assert col["index"].tolist() == list(range(index, index + STEPS))
        assert np.array_equal(col["next.reward"], ep["reward"]) and col["next.done"].tolist() == [False] * 19 + [True]
        index += STEPS
        for cam in ("front", "wrist"):
            video = out_dir / info["video_path"].format(episode_chunk=0, video_key=f"observation.images.{cam}",
                                                        episode_index=i)
            cap = cv2.VideoCapture(str(video))
            assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == STEPS
            cap.release()
    code, _, err = run(capsys, "export-lerobot", made[1], out_dir)
    assert code == 2 and "already exists" in err


def test_merge_is_bit_identical_and_refuses_other_schemas(made, tmp_path, capsys):
    root, a, _ = made
    b = tmp_path / "b.zarr"
    make_store(b, 2, seed=1)
    out_path = tmp_path / "merged.zarr"
    code, out, _ = run(capsys, "merge", out_path, a, b)
    assert code == 0 and "5 episodes, 100 steps" in out
    with Store.open(out_path) as merged, Store.open(a) as sa, Store.open(b) as sb:
        sources = [(sa, i) for i in range(3)] + [(sb, i) for i in range(2)]
        assert merged.n_episodes == 5
        drop = ("index", "start", "end")
        for j, (src, i) in enumerate(sources):
            got, want = merged.read_episode(j), src.read_episode(i)
            assert all(got[k].tobytes() == want[k].tobytes() for k in want)
            mj, mi = merged.episodes_meta()[j], src.episodes_meta()[i]
            assert {k: v for k, v in mj.items() if k not in drop} == {k: v for k, v in mi.items() if k not in drop}
    assert run(capsys, "check", out_path, "--deep")[0] == 0

    other = tmp_path / "nocam.zarr"
    make_store(other, 1, seed=2, cameras=False)
    code, _, err = run(capsys, "merge", tmp_path / "bad.zarr", a, other)
    assert code == 2 and "obs/camera_front" in err and not (tmp_path / "bad.zarr").exists()
    assert not list(tmp_path.glob(".bad.zarr*"))
    code, _, err = run(capsys, "video", other, "--episode", 0)  # a missing key is bad input, not a traceback
    assert code == 2 and "camera" in err
