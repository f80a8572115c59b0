"""Store benchmarks (JSON lines): recording throughput through EpisodeWriter, and training-batch
sampling against a diffusion_policy-style reader on the same data.

    python bench/store.py [--quick]

(a) record: 2 rgb cameras 240x320 + 16x16 tactile + 7 joint positions + 7-dim action + stamp,
    written step by step through EpisodeWriter; reported as a multiple of real time at 30 Hz.
(b) sample: batch 256, 2 cameras 96x96, obs horizon 2, prediction horizon 16. Ours: Store.load()
    then SequenceSampler (one vectorised gather per key). Baseline, built the way diffusion_policy
    does it: a zarr store with whole-array chunks copied into RAM (its ReplayBuffer numpy backend),
    then a Python loop per sample slicing and edge-padding each key (its SequenceSampler), and
    the samples stacked into a batch (what a DataLoader's collate does).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robot_rl.data.episode_writer import EpisodeWriter  # noqa: E402
from robot_rl.data.sampler import SequenceSampler  # noqa: E402
from robot_rl.data.schema import KeySpec  # noqa: E402
from robot_rl.data.store import Store  # noqa: E402

CONTROL_HZ = 30.0


def camera_frames(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-like frames (smooth scene, a moving blob, sensor noise): compressible like real
    images, unlike uniform noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cx, cy = w * (0.5 + 0.3 * np.sin(i / 10)), h * (0.5 + 0.3 * np.cos(i / 13))
        blob = 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (h / 8) ** 2))
        img = np.stack([60 + 0.3 * xx + blob, 80 + 0.4 * yy, 100 + 0.5 * blob], -1)
        out[i] = (img + rng.normal(0, 2, img.shape)).clip(0, 255).astype(np.uint8)
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_record(root: Path, episodes: int, steps: int, background: bool, durable: bool, paced: bool = False) -> dict:
    """As fast as possible (throughput), or `paced` at the real 30 Hz (the latency add_step and
    commit cost a control loop)."""
    rng = np.random.default_rng(0)
    keys = {"obs/camera_front": KeySpec((240, 320, 3), "uint8"), "obs/camera_wrist": KeySpec((240, 320, 3), "uint8"),
            "obs/tactile_left": KeySpec((16, 16), "float32"), "obs/joint_pos": KeySpec((7,), "float32"),
            "action": KeySpec((7,), "float32"), "stamp": KeySpec((), "float64")}
    frames = camera_frames(60, 240, 320, rng)
    tactile = rng.normal(size=(60, 16, 16)).astype(np.float32)
    path = root / f"record_{int(background)}{int(durable)}{int(paced)}.zarr"
    store = Store.create(path, keys=keys, attrs={"control_rate_hz": CONTROL_HZ}, durable=durable)
    writer = EpisodeWriter(store, background=background)
    commit_s, add_s = [], []
    t0 = time.perf_counter()
    for e in range(episodes):
        writer.begin(source="demo")
        for t in range(steps):
            step = {"obs/camera_front": frames[t % 60], "obs/camera_wrist": frames[(t + 30) % 60],
                    "obs/tactile_left": tactile[t % 60], "obs/joint_pos": np.full(7, t, np.float32),
                    "action": np.full(7, -t, np.float32), "stamp": 1000.0 + e * 100 + t / CONTROL_HZ}
            if paced:
                time.sleep(max(0.0, t0 + (e * steps + t) / CONTROL_HZ - time.perf_counter()))
            a = time.perf_counter()
            writer.add_step(step)
            add_s.append(time.perf_counter() - a)
        c = time.perf_counter()
        writer.commit(True, {"bench": True})
        commit_s.append(time.perf_counter() - c)
    elapsed = time.perf_counter() - t0
    writer.close()
    store.close()
    total = episodes * steps
    raw = total * sum(s.row_bytes for s in keys.values())
    return {"bench": "record_paced_30hz" if paced else "record", "background": background, "durable": durable,
            "episodes": episodes,
            "steps": total, "seconds": round(elapsed, 2), "steps_per_s": round(total / elapsed, 1),
            "x_realtime_30hz": round(total / elapsed / CONTROL_HZ, 2), "raw_mb_per_s": round(raw / elapsed / 1e6, 1),
            "compression": round(raw / dir_bytes(path), 2),
            "add_step_p99_ms": round(float(np.percentile(add_s, 99)) * 1e3, 2),
            "add_step_max_ms": round(max(add_s) * 1e3, 1),
            "commit_p50_ms": round(float(np.median(commit_s)) * 1e3, 1), "commit_max_ms": round(max(commit_s) * 1e3, 1)}


# ---- (b) training-batch sampling ----

SAMPLE_KEYS = {"obs/camera_front": KeySpec((96, 96, 3), "uint8"), "obs/camera_wrist": KeySpec((96, 96, 3), "uint8"),
               "obs/joint_pos": KeySpec((7,), "float32"), "action": KeySpec((7,), "float32")}
OBS_KEYS = ["obs/camera_front", "obs/camera_wrist", "obs/joint_pos"]
OBS_HORIZON, PRED_HORIZON, PAD_AFTER, BATCH = 2, 16, 7, 256  # diffusion_policy's real-robot defaults


def sampling_dataset(episodes: int, steps: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    pool = camera_frames(240, 96, 96, rng)
    out = []
    for e in range(episodes):
        t = np.arange(steps)
        out.append({"obs/camera_front": pool[(t + e) % 240], "obs/camera_wrist": pool[(t * 3 + e) % 240],
                    "obs/joint_pos": rng.normal(size=(steps, 7)).astype(np.float32),
                    "action": rng.normal(size=(steps, 7)).astype(np.float32)})
    return out


def write_dp_style_store(path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    """diffusion_policy's layout (data/<key>, meta/episode_ends), each array one whole chunk."""
    root = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    for key in SAMPLE_KEYS:
        arr = np.concatenate([ep[key] for ep in episodes])
        root.create_array(f"data/{key}", data=arr, chunks=arr.shape)
    ends = np.cumsum([len(ep["action"]) for ep in episodes])
    root.create_array("meta/episode_ends", data=ends, chunks=ends.shape)


class DiffusionPolicyStyleSampler:
    """Reimplementation of the way diffusion_policy samples: a table of (buffer start/end, sample
    start/end) per window, then per sample a Python loop over keys that slices, fills the padding
    by repeating the edge rows, and keeps only the first k steps of observation keys."""

    def __init__(self, data: dict, episode_ends: np.ndarray, sequence_length: int, pad_before: int, pad_after: int,
                 key_first_k: dict[str, int]):
        self.data, self.sequence_length, self.key_first_k = data, sequence_length, key_first_k
        rows = []
        start = 0
        for end in episode_ends:
            n = int(end - start)
            for idx in range(-pad_before, n - sequence_length + pad_after + 1):
                b_start, b_end = max(idx, 0) + start, min(idx + sequence_length, n) + start
                s_start = b_start - (idx + start)
                s_end = sequence_length - ((idx + sequence_length + start) - b_end)
                rows.append((b_start, b_end, s_start, s_end))
            start = int(end)
        self.indices = np.array(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def sample_sequence(self, i: int) -> dict[str, np.ndarray]:
        b_start, b_end, s_start, s_end = self.indices[i]
        out = {}
        for key, arr in self.data.items():
            if key in self.key_first_k:
                n_data = b_end - b_start
                k = min(self.key_first_k[key], n_data)
                sample = np.zeros((n_data, *arr.shape[1:]), dtype=arr.dtype)
                sample[:k] = arr[b_start:b_start + k]
            else:
                sample = arr[b_start:b_end]
            seq = sample
            if s_start > 0 or s_end < self.sequence_length:
                seq = np.zeros((self.sequence_length, *arr.shape[1:]), dtype=arr.dtype)
                if s_start > 0:
                    seq[:s_start] = sample[0]
                if s_end < self.sequence_length:
                    seq[s_end:] = sample[-1]
                seq[s_start:s_end] = sample
            out[key] = seq[:self.key_first_k[key]] if key in self.key_first_k else seq
        return out

    def batch(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        samples = [self.sample_sequence(int(i)) for i in ids]  # a Dataset's __getitem__ per sample
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}  # the DataLoader's collate


def time_batches(fn, min_batches: int, min_seconds: float) -> float:
    """Samples per second of fn(), which returns one batch of BATCH samples."""
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return n * BATCH / (time.perf_counter() - t0)


def bench_sample(root: Path, episodes: int, steps: int) -> list[dict]:
    data = sampling_dataset(episodes, steps)
    ours_path, dp_path = root / "sample_ours.zarr", root / "sample_dp.zarr"
    with Store.create(ours_path, keys=SAMPLE_KEYS, attrs={"control_rate_hz": 10.0}, durable=False) as store:
        for ep in data:
            store.append_episode(ep, source="demo", success=True, start_time=0.0, health={})
    write_dp_style_store(dp_path, data)
    del data
    rng = np.random.default_rng(0)
    common = {"bench": "sample", "batch": BATCH, "obs_horizon": OBS_HORIZON, "pred_horizon": PRED_HORIZON,
              "cameras": "2x96x96", "steps": episodes * steps, "episodes": episodes}

    t0 = time.perf_counter()
    loaded = Store.open(ours_path).load()
    ours_load = time.perf_counter() - t0
    sampler = SequenceSampler(loaded, loaded["episode_ends"], obs_keys=OBS_KEYS, action_keys=["action"],
                              obs_horizon=OBS_HORIZON, pred_horizon=PRED_HORIZON, pad_after=PAD_AFTER)
    ours = time_batches(lambda: sampler.sample(BATCH, rng), 50, 3.0)
    del loaded, sampler

    t0 = time.perf_counter()
    root_group = zarr.open_group(zarr.storage.LocalStore(dp_path, read_only=True), mode="r")
    dp_data = {k: root_group[f"data/{k}"][:] for k in SAMPLE_KEYS}  # ReplayBuffer numpy backend: copy into RAM
    dp_ends = root_group["meta/episode_ends"][:]
    dp_load = time.perf_counter() - t0
    dp = DiffusionPolicyStyleSampler(dp_data, dp_ends, PRED_HORIZON, OBS_HORIZON - 1, PAD_AFTER,
                                     {k: OBS_HORIZON for k in OBS_KEYS})
    assert len(dp) == len(SequenceSampler(dp_data, dp_ends, obs_keys=OBS_KEYS, action_keys=["action"],
                                          obs_horizon=OBS_HORIZON, pred_horizon=PRED_HORIZON, pad_after=PAD_AFTER))
    baseline = time_batches(lambda: dp.batch(rng.integers(0, len(dp), BATCH)), 5, 3.0)
    return [
        {**common, "reader": "robot_rl", "samples_per_s": round(ours), "load_s": round(ours_load, 2),
         "chunks": "1 frame / ~1 MB low-dim"},
        {**common, "reader": "diffusion_policy_style", "samples_per_s": round(baseline), "load_s": round(dp_load, 2),
         "chunks": "whole array"},
        {"bench": "sample_speedup", "x": round(ours / baseline, 1)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="robot_rl_bench_store_"))
    rec_episodes, rec_steps = (2, 150) if args.quick else (6, 300)
    smp_episodes, smp_steps = (10, 100) if args.quick else (50, 200)
    try:
        for background, durable in ((True, True), (True, False), (False, False)):
            line = bench_record(root, rec_episodes, rec_steps, background, durable)
            print(json.dumps({**line, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
        line = bench_record(root, 1, 5 * int(CONTROL_HZ) if args.quick else 10 * int(CONTROL_HZ), True, True, paced=True)
        print(json.dumps({**line, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
        for line in bench_sample(root, smp_episodes, smp_steps):
            print(json.dumps({**line, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
