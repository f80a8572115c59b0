"""The commit protocol under fire: a writer process killed with SIGKILL at random moments and at each
commit phase, and a reader process sampling while a writer appends.

Every episode e written here is a deterministic function of e whose rows are all nonzero and carry
e + 1 in joint_pos[:, 0], so any uncommitted, zero-filled or misplaced row is detectable.
"""
from __future__ import annotations

import hashlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data.schema import KeySpec
from robot_rl.data.store import Store, check, repair

ROOT = Path(__file__).resolve().parent.parent

EPISODE_SRC = r'''
import numpy as np

KEYS_JSON = {"obs/camera": [[8, 8, 3], "uint8"], "obs/joint_pos": [[7], "float32"], "action": [[7], "float32"],
             "reward": [[], "float32"], "intervention": [[], "bool"], "stamp": [[], "float64"]}


def make_episode(e):
    T = 12 + (e * 7) % 25
    t = np.arange(T)
    cam = (e * 31 + t[:, None] * 7 + np.arange(192)[None, :]) % 255 + 1
    joint = np.empty((T, 7), np.float32)
    joint[:, 0] = e + 1
    joint[:, 1:] = (t[:, None] + 1) * np.arange(1, 7)
    return {"obs/camera": cam.reshape(T, 8, 8, 3).astype(np.uint8), "obs/joint_pos": joint,
            "action": (-(e + 1) - t[:, None] / 100.0 - np.zeros((1, 7))).astype(np.float32),
            "reward": np.full(T, e + 1, np.float32), "intervention": np.ones(T, bool),
            "stamp": 1000.0 + e * 10 + (t + 1) / 30.0}
'''

WRITER_SRC = EPISODE_SRC + r'''
import sys, threading, time, uuid
import zarr
import robot_rl.data.store_io as store_io
from robot_rl.data.store import Store
from robot_rl.data.episode_writer import EpisodeWriter

path, mode, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
state = {"episode": None, "flushes": 0}


announce = threading.Lock()


def pause(what):
    """Stop here until killed (zarr writes chunks from several threads: announce only once)."""
    if announce.acquire(blocking=False):
        print(f"PAUSED {what} {state['episode']}", flush=True)
    time.sleep(600)


real_put = zarr.storage._local._put


def put(file_path, value, exclusive=False):
    name = str(file_path)
    if state["episode"] is not None:
        if mode == "ends_json" and name.endswith("meta/episode_ends/c.0"):
            pause(mode)  # episode_ends' zarr.json already holds the new shape
        if mode == "partial_chunk" and "/data/obs/camera/c." in name and state["flushes"] >= 1:
            with open(file_path.with_suffix(f".{uuid.uuid4().hex}.partial"), "wb") as f:
                f.write(bytes(value.as_buffer_like())[: len(value) // 2])
            pause(mode)
    return real_put(file_path, value, exclusive)


zarr.storage._local._put = put
if mode == "truncate":
    real_truncate = store_io.truncate

    def truncate(arr, rows):
        removed = real_truncate(arr, rows)
        if removed:
            pause(mode)
        return removed

    store_io.truncate = truncate

store = Store.open(path, "a", durable=bool(seed % 2))
print(f"OPEN {store.n_episodes}", flush=True)
if mode in ("rows_written", "meta_written", "committed"):
    store.on_commit_phase = lambda phase, e: pause(phase) if phase == mode else None
real_append_rows = store._append_rows


def append_rows(rows):
    real_append_rows(rows)
    state["flushes"] += 1
    if mode == "rows" and state["flushes"] == 2:
        pause(mode)


store._append_rows = append_rows
writer = EpisodeWriter(store, flush_steps=int(rng.integers(2, 9)), background=bool(rng.integers(2)))
for e in range(store.n_episodes, store.n_episodes + count):
    state["episode"], state["flushes"] = e, 0
    ep = make_episode(e)
    if e % 3 == 2:
        store.append_episode(ep, source="rollout", success=e % 2 == 0, start_time=float(e), health={"e": e})
    else:
        writer.begin(source="demo")
        for t in range(len(ep["stamp"])):
            writer.add_step({k: v[t] for k, v in ep.items()})
        writer.commit(e % 2 == 0, {"e": e}, start_time=float(e))
    print(f"COMMITTED {e}", flush=True)
writer.close()
store.close()
print("DONE", flush=True)
'''

_ns: dict = {}
exec(EPISODE_SRC, _ns)
make_episode = _ns["make_episode"]
KEYS = {k: KeySpec(tuple(shape), dtype) for k, (shape, dtype) in _ns["KEYS_JSON"].items()}
ALLOWED_AFTER_CRASH = ("beyond the last committed episode", "uncommitted entry", "stray temp file")


def episode_hash(data: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(data):
        h.update(k.encode() + np.ascontiguousarray(data[k]).tobytes())
    return h.hexdigest()


EXPECTED = {e: episode_hash(make_episode(e)) for e in range(400)}


class Writer:
    """The writer subprocess with its stdout lines in a queue."""

    def __init__(self, path: Path, script: Path, mode: str, seed: int, count: int = 1000):
        self.proc = subprocess.Popen([sys.executable, str(script), str(path), mode, str(seed), str(count)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.committed: list[int] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        RUNNING.append(self)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("EOF")

    def finish(self) -> int:
        """Wait for the process to exit and release its pipe."""
        code = self.proc.wait(timeout=60)
        self._pump_thread.join(timeout=30)
        self.proc.stdout.close()
        return code

    def wait_for(self, *prefixes: str, timeout: float = 60.0) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line.startswith("COMMITTED"):
                self.committed.append(int(line.split()[1]))
            if line.startswith(prefixes) or line == "EOF":
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.finish()
        while not self.lines.empty():
            line = self.lines.get()
            if line.startswith("COMMITTED"):
                self.committed.append(int(line.split()[1]))


RUNNING: list[Writer] = []


@pytest.fixture
def store_and_script(tmp_path: Path):
    path = tmp_path / "crash.zarr"
    Store.create(path, keys=KEYS, attrs={"control_rate_hz": 30.0}, durable=False).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SRC)
    yield path, script
    while RUNNING:  # no writer outlives its test, even a failed one
        RUNNING.pop().kill()


def verify_all_committed(path: Path) -> int:
    """Every committed episode bit-for-bit equal to what was written; returns their number."""
    store = Store.open(path)
    data = store.load()
    starts = np.concatenate([[0], data["episode_ends"][:-1]])
    for e, (a, b) in enumerate(zip(starts, data["episode_ends"])):
        assert episode_hash({k: data[k][a:b] for k in KEYS}) == EXPECTED[e], f"episode {e} differs"
    meta = store.episodes_meta()
    assert [m["health"] for m in meta] == [{"e": e} for e in range(len(meta))]
    assert [m["success"] for m in meta] == [e % 2 == 0 for e in range(len(meta))]
    return store.n_episodes


PHASES = ["rows", "rows_written", "meta_written", "truncate", "ends_json", "partial_chunk", "committed"]


def test_kill_9_at_every_commit_phase_and_at_random(store_and_script):
    path, script = store_and_script
    rng = random.Random(1234)
    trials = [*PHASES, *PHASES, *["random"] * 10]
    outcomes = []
    for trial, mode in enumerate(trials):
        before = verify_all_committed(path)
        writer = Writer(path, script, mode, seed=trial)
        opened = writer.wait_for("OPEN", "PAUSED")
        paused_episode = None
        if opened.startswith("PAUSED truncate"):
            pass  # killed inside the truncation of the previous crash's rows
        else:
            assert opened == f"OPEN {before}", f"trial {trial} ({mode}): writer saw {opened!r}, committed {before}"
            if mode in ("random", "truncate"):  # truncate with nothing to truncate: a random kill
                if rng.random() < 0.5:
                    writer.wait_for("COMMITTED")
                threading.Event().wait(rng.uniform(0.0, 0.3))
            else:
                line = writer.wait_for("PAUSED")
                assert line.startswith(f"PAUSED {mode}") and len(line.split()) == 3, (trial, mode, line)
                paused_episode = int(line.split()[2])
        writer.kill()
        after = verify_all_committed(path)
        assert after >= before and after >= len(writer.committed) + before
        if paused_episode is not None:
            assert after == paused_episode + (1 if mode == "committed" else 0), (mode, after, paused_episode)
        problems = check(path)
        assert all(any(a in p for a in ALLOWED_AFTER_CRASH) for p in problems), problems
        outcomes.append((mode, after - before, bool(problems)))
    assert sum(1 for _, _, dirty in outcomes if dirty) >= 5  # the kills really left debris behind
    # a writer in this process: opens (truncating), appends the next episode, everything intact
    with Store.open(path, "a") as store:
        n = store.n_episodes
        e = make_episode(n)
        store.append_episode(e, source="demo", success=n % 2 == 0, start_time=float(n), health={"e": n})
    assert verify_all_committed(path) == n + 1
    repair(path)
    assert check(path, deep=True) == []


def test_writer_killed_while_truncating(store_and_script):
    """A crash during the truncation that follows a crash: the store still reopens."""
    path, script = store_and_script
    first = Writer(path, script, "meta_written", seed=1)
    assert first.wait_for("PAUSED").startswith("PAUSED meta_written")
    first.kill()
    assert any("beyond the last committed" in p for p in check(path))
    second = Writer(path, script, "truncate", seed=2)
    assert second.wait_for("OPEN", "PAUSED").startswith("PAUSED truncate")
    second.kill()
    n = verify_all_committed(path)
    third = Writer(path, script, "none", seed=3, count=2)
    assert third.wait_for("DONE") == "DONE" and third.finish() == 0
    assert verify_all_committed(path) == n + 2
    assert check(path, deep=True) == []


def test_reader_never_sees_uncommitted_rows(store_and_script):
    """A reader (this process) samples episodes while a writer process appends with tiny flushes,
    so array shapes keep running ahead of episode_ends."""
    path, script = store_and_script
    n_written = 30
    writer = Writer(path, script, "none", seed=0, count=n_written)
    reader = Store.open(path)
    rng = np.random.default_rng(0)
    seen_counts, checks = set(), 0
    while writer.proc.poll() is None:
        n = reader.refresh()
        seen_counts.add(n)
        if n == 0:
            threading.Event().wait(0.01)
            continue
        for e in {n - 1, int(rng.integers(n))}:  # the newest episode is where a race would show
            ep = reader.read_episode(e)
            assert ep["obs/camera"].all() and ep["reward"].all() and ep["intervention"].all(), f"episode {e}: zero rows"
            assert (ep["obs/joint_pos"][:, 0] == e + 1).all(), f"episode {e} has rows of another episode"
            assert episode_hash(ep) == EXPECTED[e]
            checks += 1
        if checks % 10 == 0:
            data = reader.load(keys=["obs/joint_pos"])
            assert len(data["obs/joint_pos"]) == data["episode_ends"][-1]
            assert (data["obs/joint_pos"][:, 0] > 0).all()
    assert writer.finish() == 0
    assert reader.refresh() == n_written and verify_all_committed(path) == n_written
    assert len(seen_counts) >= 5 and checks >= 30, (sorted(seen_counts), checks)
