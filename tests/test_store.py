"""Store schema v1: roundtrip, meta, load, EpisodeWriter, repair/check and every bad-input error."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.schema import KeySpec, StoreError
from robot_rl.data.store import Store, check, repair

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "obs/camera_front": KeySpec((12, 16, 3), "uint8"),
    "obs/tactile_left_finger": KeySpec((4, 5), "float32"),
    "obs/joint_pos": KeySpec((7,), "float32"),
    "action": KeySpec((7,), "float32"),
    "reward": KeySpec((), "float32"),
    "intervention": KeySpec((), "bool"),
    "stamp": KeySpec((), "float64"),
}
ATTRS = {
    "control_rate_hz": 30.0,
    "profile": {"name": "sim", "robot": {"driver": "mujoco_sim"}},
    "streams": [{"name": "camera_front", "shape": [12, 16, 3], "dtype": "uint8", "rate_hz": 30.0}],
    "action": {"joint_names": [f"j{i}" for i in range(7)], "lower": [-1.0] * 7, "upper": [1.0] * 7},
}


def make_episode(rng: np.random.Generator, length: int, t0: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "obs/camera_front": rng.integers(0, 256, (length, 12, 16, 3), dtype=np.uint8),
        "obs/tactile_left_finger": rng.normal(size=(length, 4, 5)).astype(np.float32),
        "obs/joint_pos": rng.normal(size=(length, 7)).astype(np.float32),
        "action": rng.normal(size=(length, 7)).astype(np.float32),
        "reward": rng.random(length).astype(np.float32),
        "intervention": rng.random(length) < 0.3,
        "stamp": t0 + np.arange(length) / 30.0,
    }


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k  # bit for bit (NaN-safe)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.zarr"


@pytest.fixture
def filled(store_path: Path):
    """A store with three committed episodes and the data that went in."""
    rng = np.random.default_rng(1)
    episodes = [make_episode(rng, n, t0=10.0 * i) for i, n in enumerate((5, 9, 3))]
    with Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False) as store:
        for i, ep in enumerate(episodes):
            assert store.append_episode(ep, source=["demo", "rollout", "intervention"][i], success=i != 1,
                                        start_time=10.0 * i, health={"latency_ms": i}, base_ckpt="ab" * i) == i
    return store_path, episodes


# ---- roundtrip, meta, load ----


def test_roundtrip_is_bit_exact(filled):
    path, episodes = filled
    store = Store.open(path)
    assert store.n_episodes == 3 and store.n_steps == 17
    assert store.keys == KEYS
    for i, ep in enumerate(episodes):
        assert_same(store.read_episode(i), ep)
    assert [len(e["stamp"]) for e in store.iter_episodes(keys=["stamp"])] == [5, 9, 3]
    assert store.episode_slice(1) == slice(5, 14) and store.episode_slice(-1) == slice(14, 17)
    with pytest.raises(IndexError):
        store.episode_slice(3)


def test_long_episodes_load_bit_exact(store_path):
    """Enough frames for the threaded frame reader; a missing frame file reads as zeros, as in zarr."""
    rng = np.random.default_rng(11)
    episodes = [make_episode(rng, 150), make_episode(rng, 90)]
    with Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False) as store:
        for ep in episodes:
            store.append_episode(ep, source="demo", success=True, start_time=0.0, health={})
    store = Store.open(store_path)
    assert_same(store.read_episode(0), episodes[0])
    assert store.load(episodes=[1, 0])["obs/camera_front"].tobytes() == np.concatenate(
        [episodes[1]["obs/camera_front"], episodes[0]["obs/camera_front"]]).tobytes()
    (store_path / "data" / "obs" / "camera_front" / "c.151.0.0.0").unlink()
    frames = store.read_episode(1, keys=["obs/camera_front"])["obs/camera_front"]
    assert not frames[1].any() and frames[2].tobytes() == episodes[1]["obs/camera_front"][2].tobytes()


def test_attrs_and_layout_follow_schema_v1(filled):
    path, _ = filled
    store = Store.open(path)
    assert store.attrs["schema_version"] == 1
    for k in ("profile", "streams", "action", "control_rate_hz"):
        assert store.attrs[k] == ATTRS[k]
    assert store.attrs["keys"]["obs/camera_front"] == {"shape": [12, 16, 3], "dtype": "uint8"}
    root = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")
    image, joint = root["data/obs/camera_front"], root["data/obs/joint_pos"]
    assert image.chunks == (1, 12, 16, 3)  # one frame per chunk
    assert 512 << 10 <= joint.chunks[0] * 7 * 4 <= 2 << 20  # ~1 MB low-dim chunks
    assert type(image.compressors[0]).__name__ == "BloscCodec"
    assert root["meta/episode_ends"].dtype == np.int64


def test_episodes_meta(filled):
    path, _ = filled
    meta = Store.open(path).episodes_meta()
    assert [m["source"] for m in meta] == ["demo", "rollout", "intervention"]
    assert [m["success"] for m in meta] == [True, False, True]
    assert [m["length"] for m in meta] == [5, 9, 3]
    assert [m["start_time"] for m in meta] == [0.0, 10.0, 20.0]
    assert meta[1]["duration"] == pytest.approx(9 / 30.0)  # from stamps: span + one period
    assert [m["base_ckpt"] for m in meta] == ["", "ab", "abab"]
    assert meta[2]["health"] == {"latency_ms": 2}


def test_load_all_and_subsets(filled):
    path, episodes = filled
    store = Store.open(path)
    everything = store.load()
    assert everything["episode_ends"].tolist() == [5, 14, 17]
    for k in KEYS:
        assert everything[k].tobytes() == np.concatenate([e[k] for e in episodes]).tobytes()
    subset = store.load(keys=["action", "obs/camera_front"], episodes=[2, 0])
    assert set(subset) == {"action", "obs/camera_front", "episode_ends"}
    assert subset["episode_ends"].tolist() == [3, 8]
    assert subset["action"].tobytes() == np.concatenate([episodes[2]["action"], episodes[0]["action"]]).tobytes()
    with pytest.raises(StoreError, match="no key 'nope'"):
        store.load(keys=["nope"])
    with pytest.raises(StoreError, match="no key"):
        store.read_episode(0, keys=["obs/camera_back"])


def test_new_source_labels_are_added(store_path):
    rng = np.random.default_rng(2)
    with Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False) as store:
        store.append_episode(make_episode(rng, 2), source="scripted_expert", success=True, start_time=0, health={})
    assert Store.open(store_path).episodes_meta()[0]["source"] == "scripted_expert"


# ---- EpisodeWriter ----


@pytest.mark.parametrize("background", [True, False])
def test_episode_writer_streams_commits_and_discards(store_path, background):
    rng = np.random.default_rng(3)
    store = Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False)
    writer = EpisodeWriter(store, flush_steps=4, background=background)
    reader = Store.open(store_path)
    kept = []
    for i, length in enumerate((11, 6, 4)):
        ep = make_episode(rng, length, t0=100.0 + i)
        writer.begin(source="rollout")
        for t in range(length):
            writer.add_step({k: v[t] for k, v in ep.items()})
        assert reader.refresh() == len(kept)  # rows on disk, but not committed: invisible
        if i == 1:
            writer.discard()
            continue
        assert writer.commit(success=True, health={"i": i}) == len(kept)
        kept.append(ep)
    writer.close()
    store.close()
    assert reader.refresh() == 2
    for i, ep in enumerate(kept):
        assert_same(reader.read_episode(i), ep)
    assert reader.episodes_meta()[1]["start_time"] == 102.0  # the first step's stamp
    assert check(store_path, deep=True) == []


def test_episode_writer_from_background_threads(store_path):
    """A ROS-callback thread adds steps, a service thread commits: calls are serialised."""
    rng = np.random.default_rng(4)
    ep = make_episode(rng, 40)
    store = Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False)
    writer = EpisodeWriter(store, flush_steps=8)
    writer.begin()
    adder = threading.Thread(target=lambda: [writer.add_step({k: v[t] for k, v in ep.items()}) for t in range(40)])
    adder.start()
    adder.join()
    result = []
    committer = threading.Thread(target=lambda: result.append(writer.commit(True, {})))
    committer.start()
    committer.join()
    assert result == [0]
    writer.close()
    store.close()
    assert_same(Store.open(store_path).read_episode(0), ep)


def test_episode_writer_bad_steps_and_labels(store_path):
    rng = np.random.default_rng(5)
    ep = make_episode(rng, 3)
    store = Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False)
    writer = EpisodeWriter(store, flush_steps=2)
    with pytest.raises(StoreError, match="begin"):
        writer.add_step({k: v[0] for k, v in ep.items()})
    writer.begin()
    step = {k: v[0] for k, v in ep.items()}
    with pytest.raises(StoreError, match="'obs/joint_pos': shape"):
        writer.add_step({**step, "obs/joint_pos": np.zeros(6, np.float32)})
    with pytest.raises(StoreError, match="missing key"):
        writer.add_step({k: v for k, v in step.items() if k != "reward"})
    with pytest.raises(StoreError, match="float64 cannot be stored as uint8"):
        writer.add_step({**step, "obs/camera_front": step["obs/camera_front"] / 255.0})
    for t in range(3):
        writer.add_step({k: v[t] for k, v in ep.items()})
    with pytest.raises(StoreError, match="lower_snake_case"):
        writer.commit(True, {}, source="Bad Label")
    with pytest.raises(StoreError, match="JSON"):
        writer.commit(True, {"x": float("nan")})
    assert writer.is_open  # a caller mistake at commit does not lose the episode
    assert writer.commit(True, {}) == 0
    writer.close()
    store.close()
    assert_same(Store.open(store_path).read_episode(0), ep)


# ---- repair and check ----


def test_repair_and_check_after_an_abandoned_episode(filled):
    path, episodes = filled
    store = Store.open(path, "a")
    store._begin_episode()
    store._append_rows(make_episode(np.random.default_rng(6), 4))
    store._lock.release()  # the writer "dies": nothing truncated, lock file left behind
    (path / "data" / "action" / "c.0.0.abc123.partial").write_bytes(b"half a chunk")
    problems = check(path)
    assert any("4 row(s) beyond the last committed episode" in p for p in problems)
    assert any("stray temp file" in p for p in problems)
    assert Store.open(path).n_episodes == 3  # readers are unaffected
    report = repair(path)
    assert report["episodes"] == 3 and report["steps"] == 17
    assert report["removed_rows"]["data/obs/camera_front"] == 4
    assert report["removed_partial_files"] == 1
    assert check(path, deep=True) == []
    reader = Store.open(path)
    for i, ep in enumerate(episodes):
        assert_same(reader.read_episode(i), ep)


def test_check_finds_damage(filled):
    path, _ = filled
    assert check(path, deep=True) == []
    (path / "data" / "obs" / "camera_front" / "c.6.0.0.0").unlink()  # a committed frame vanished
    assert any("missing 1 chunk file" in p for p in check(path, deep=True))
    (path / "data" / "obs" / "camera_front" / "c.6.0.0.0").write_bytes(b"garbage")
    assert any("cannot be read" in p for p in check(path, deep=True))


def test_check_finds_broken_episode_ends(filled):
    path, _ = filled
    ends = zarr.open_array(zarr.storage.LocalStore(path), path="meta/episode_ends", mode="r+")
    ends[1] = 2  # not increasing, with a later entry
    problems = check(path)
    assert any("not positive and strictly increasing at index 1" in p for p in problems)
    assert Store.open(path).n_episodes == 1  # readers trust only the valid prefix


# ---- errors ----


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="it is a file"):
        Store.open(tmp_path / "file")
    with pytest.raises(StoreError, match="no zarr.json"):
        Store.open(tmp_path)
    zarr.create_group(zarr.storage.LocalStore(tmp_path / "plain.zarr"))
    with pytest.raises(StoreError, match="not a robot_rl store"):
        Store.open(tmp_path / "plain.zarr")
    (tmp_path / "v2.zarr").mkdir()
    (tmp_path / "v2.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(StoreError, match="zarr v2"):
        Store.open(tmp_path / "v2.zarr")
    assert check(tmp_path / "v2.zarr") and "not a store" in check(tmp_path / "v2.zarr")[0]


def test_other_schema_version(filled):
    path, _ = filled
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 2
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema version 2 is not supported"):
        Store.open(path)
    with pytest.raises(StoreError, match="schema version 2"):
        repair(path)


def test_missing_array(filled):
    path, _ = filled
    import shutil

    shutil.rmtree(path / "data" / "action")
    with pytest.raises(StoreError, match="missing array 'data/action'"):
        Store.open(path)
    assert any("missing array 'data/action'" in p for p in check(path))


def test_bad_create_arguments(tmp_path):
    with pytest.raises(StoreError, match="lower_snake_case"):
        Store.create(tmp_path / "a", keys={"Obs/Cam": KeySpec((2,), "float32")}, attrs=ATTRS)
    with pytest.raises(StoreError, match="not storable"):
        KeySpec((2,), "U4")
    with pytest.raises(StoreError, match="control_rate_hz: must be a positive"):
        Store.create(tmp_path / "b", keys=KEYS, attrs={**ATTRS, "control_rate_hz": -1})
    with pytest.raises(StoreError, match="control_rate_hz: is required"):
        Store.create(tmp_path / "c", keys=KEYS, attrs={})
    with pytest.raises(StoreError, match="set by the store"):
        Store.create(tmp_path / "d", keys=KEYS, attrs={**ATTRS, "schema_version": 1})
    with pytest.raises(StoreError, match="lower must be below upper"):
        Store.create(tmp_path / "e", keys=KEYS, attrs={**ATTRS, "action": {"joint_names": ["a"], "lower": [1.0], "upper": [0.0]}})
    Store.create(tmp_path / "f", keys=KEYS, attrs=ATTRS).close()
    with pytest.raises(StoreError, match="already exists"):
        Store.create(tmp_path / "f", keys=KEYS, attrs=ATTRS)
    assert not [p for p in tmp_path.iterdir() if "creating" in p.name]


def test_wrong_episode_data(store_path):
    rng = np.random.default_rng(7)
    store = Store.create(store_path, keys=KEYS, attrs=ATTRS, durable=False)
    ep = make_episode(rng, 4)
    meta = dict(source="demo", success=True, start_time=0.0, health={})
    cases = [
        ({**ep, "obs/camera_front": np.zeros((4, 12, 16, 4), np.uint8)}, r"'obs/camera_front': shape \(4, 12, 16, 4\)"),
        ({**ep, "obs/camera_front": ep["obs/camera_front"].astype(np.float32)}, "float32 cannot be stored as uint8"),
        ({**ep, "intervention": ep["intervention"].astype(np.float32)}, "cannot be stored as bool"),
        ({k: v for k, v in ep.items() if k != "stamp"}, "missing key"),
        ({**ep, "extra": ep["reward"]}, "unknown key"),
        ({**ep, "reward": ep["reward"][:3]}, "share one non-zero length"),
    ]
    for data, message in cases:
        with pytest.raises(StoreError, match=message):
            store.append_episode(data, **meta)
    assert store.n_episodes == 0 and check(store_path) == []
    # float64 joint values are stored at the key's float32 precision
    store.append_episode({**ep, "obs/joint_pos": ep["obs/joint_pos"].astype(np.float64)}, **meta)
    assert store.read_episode(0)["obs/joint_pos"].dtype == np.float32
    store.close()
    with pytest.raises(StoreError, match="not open for writing"):
        Store.open(store_path).append_episode(ep, **meta)


def test_unwritable_path(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(StoreError, match="cannot create store"):
        Store.create(tmp_path / "a_file" / "store.zarr", keys=KEYS, attrs=ATTRS)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        Store.create(ro / "s.zarr", keys=KEYS, attrs=ATTRS).close()
        for d in (ro, ro / "s.zarr"):
            d.chmod(0o555)
        try:
            with pytest.raises(StoreError, match="cannot open for writing"):
                Store.open(ro / "s.zarr", "a")
            with pytest.raises(StoreError, match="cannot create store"):
                Store.create(ro / "t.zarr", keys=KEYS, attrs=ATTRS)
        finally:
            for d in (ro, ro / "s.zarr"):
                d.chmod(0o755)


def test_full_disk_loses_only_the_open_episode(filled, monkeypatch):
    """ENOSPC in the middle of an episode (simulated at zarr's file-write boundary)."""
    path, episodes = filled
    real_put = zarr.storage._local._put
    writes = {"n": 0}

    def full_after_a_few(file_path, value, exclusive=False):
        if "/data/" in str(file_path):
            writes["n"] += 1
            if writes["n"] > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(file_path, value, exclusive)

    store = Store.open(path, "a", durable=False)
    monkeypatch.setattr(zarr.storage._local, "_put", full_after_a_few)
    with pytest.raises(StoreError, match=r"episode 3 was lost \(ENOSPC: No space left on device\); the 3 committed"):
        store.append_episode(make_episode(np.random.default_rng(8), 6), source="demo", success=True,
                             start_time=0.0, health={})
    writes["n"] = 0
    writer = EpisodeWriter(store, flush_steps=2)
    writer.begin()
    ep = make_episode(np.random.default_rng(9), 8)
    with pytest.raises(StoreError, match="was lost"):
        for t in range(8):
            writer.add_step({k: v[t] for k, v in ep.items()})
        writer.commit(True, {})
    assert not writer.is_open
    monkeypatch.setattr(zarr.storage._local, "_put", real_put)  # space freed
    # the rollback's own zarr.json writes failed on the full disk too: rows may remain, uncommitted
    assert store.n_episodes == 3 and all("beyond the last committed" in p for p in check(path))
    assert Store.open(path).n_episodes == 3
    writer.begin()  # retries the truncation first
    assert check(path) == []
    for t in range(8):
        writer.add_step({k: v[t] for k, v in ep.items()})
    assert writer.commit(True, {}) == 3
    writer.close()
    store.close()
    reader = Store.open(path)
    for i, e in enumerate([*episodes, ep]):
        assert_same(reader.read_episode(i), e)


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounting a tmpfs needs root on Linux")
def test_really_full_disk(tmp_path):
    """A real filesystem filling up: appends fail with a lost-episode error, earlier ones survive."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        rng = np.random.default_rng(10)
        store = Store.create(mnt / "s.zarr", keys=KEYS, attrs=ATTRS)
        committed = []
        with pytest.raises(StoreError, match="ENOSPC"):
            for _ in range(1000):
                ep = make_episode(rng, 200)
                store.append_episode(ep, source="demo", success=True, start_time=0.0, health={})
                committed.append(ep)
        assert len(committed) >= 2
        store.close()
        reader = Store.open(mnt / "s.zarr")
        assert reader.n_episodes == len(committed)
        for i in (0, len(committed) - 1):
            assert_same(reader.read_episode(i), committed[i])
        repair(mnt / "s.zarr")
        assert check(mnt / "s.zarr", deep=True) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


HOLD_WRITER = """
import sys
from robot_rl.data.store import Store
store = Store.open(sys.argv[1], "a")
print("ready", flush=True)
sys.stdin.readline()
"""


def _start_writer(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_writer_in_another_process_is_refused(filled):
    path, _ = filled
    proc = _start_writer(path)
    try:
        with pytest.raises(StoreError, match=f"already open for writing by pid {proc.pid}"):
            Store.open(path, "a")
        with pytest.raises(StoreError, match=f"pid {proc.pid}"):
            repair(path)
        assert Store.open(path).n_episodes == 3  # readers need no lock
    finally:
        proc.communicate("\n", timeout=30)
    Store.open(path, "a").close()  # released on a clean exit


def test_second_writer_in_the_same_process_is_refused(filled):
    path, _ = filled
    with Store.open(path, "a"):
        with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
            Store.open(path, "a")


def test_stale_lock_of_a_killed_writer_is_recovered(filled):
    path, episodes = filled
    proc = _start_writer(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert json.loads((path / ".writer.lock").read_text())["pid"] == proc.pid  # the stale record
    report = repair(path)
    assert report["stale_lock"]["pid"] == proc.pid
    with Store.open(path, "a") as store:
        assert store.append_episode(episodes[0], source="demo", success=True, start_time=0.0, health={}) == 3
