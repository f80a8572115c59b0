"""`export-lerobot`: a store as a LeRobot dataset, format v2.1 (codebase_version "v2.1": per-episode
parquet files, per-episode per-camera MP4s, meta/info.json + episodes/tasks/episodes_stats jsonl).

Timestamps are the real capture stamps relative to each episode's first step, never
frame_index / fps (LeRobot's own recorder invents them that way, which hides jitter). LeRobot's
loader checks consecutive timestamps against 1/fps within `tolerance_s` (default 1e-4 s), so the
export reports the largest deviation: pass at least that as `tolerance_s` when loading. Videos
are mp4v via cv2 (LeRobot encodes AV1 with ffmpeg by default; no AV1 encoder exists headless here).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.data.tools.common import (
    ToolError, camera_keys, fresh_output, iter_blocks, open_store, require_keys, tqdm_bar,
)
from robot_rl.data.tools.video import FOURCC, Mp4Writer

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
REQUIRED = ("obs/joint_pos", "action", "stamp")


@dataclass
class Feature:
    """One LeRobot feature and the store key it comes from (None: computed by the export)."""

    name: str
    dtype: str
    shape: list[int]
    key: str | None = None
    names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def spec(self) -> dict:
        out = {"dtype": self.dtype, "shape": self.shape, "names": self.names}
        return {**out, "info": self.info} if self.info else out


def features_of(store) -> tuple[list[Feature], list[str]]:
    """(LeRobot features in column order, store keys not exported)."""
    joints = list((store.attrs.get("action") or {}).get("joint_names") or []) or None
    fps = export_fps(store)
    feats, skipped = [], []
    cams = {k: n for n, k in camera_keys(store).items()}
    renamed = {"obs/joint_pos": "observation.state", "obs/joint_vel": "observation.velocity", "action": "action",
               "reward": "next.reward"}
    for key, spec in store.keys.items():
        if key == "stamp":
            continue
        if key in cams:
            h, w, c = spec.shape
            video = {"video.fps": fps, "video.height": h, "video.width": w, "video.channels": c, "video.codec": FOURCC,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "has_audio": False}
            feats.append(Feature(f"observation.images.{cams[key]}", "video", [h, w, c], key,
                                 ["height", "width", "channels"], video))
            continue
        if key.startswith("obs/") and len(spec.shape) >= 2 and not key.startswith("obs/tactile_"):
            skipped.append(key)  # depth maps and other images without a video stream
            continue
        size = int(np.prod(spec.shape, dtype=np.int64))
        if key in renamed:
            name = renamed[key]
        elif key.startswith("obs/tactile_"):
            name = f"observation.tactile.{key[len('obs/tactile_'):]}"
        elif key.startswith("obs/"):
            name = "observation." + key[4:].replace("/", ".")
        else:
            name = "complementary_info." + key.replace("/", ".")
        names = None
        if joints and name in ("observation.state", "observation.velocity", "action") and spec.shape == (len(joints),):
            names = joints
        elif len(spec.shape) == 2:
            names = [f"r{r}c{c}" for r in range(spec.shape[0]) for c in range(spec.shape[1])]
        feats.append(Feature(name, spec.dtype, [max(size, 1)], key, names))
    feats += [Feature("next.done", "bool", [1]), Feature("timestamp", "float32", [1]),
              Feature("frame_index", "int64", [1]), Feature("episode_index", "int64", [1]),
              Feature("index", "int64", [1]), Feature("task_index", "int64", [1])]
    return feats, skipped


def export_fps(store) -> int | float:
    rate = float(store.attrs["control_rate_hz"])
    return int(round(rate)) if abs(rate - round(rate)) < 1e-9 else rate


def default_task(store) -> str:
    profile = store.attrs.get("profile") or {}
    return str((profile.get("sim") or {}).get("task") or profile.get("description") or profile.get("name") or "task")


def _stats(values: np.ndarray) -> dict:
    """LeRobot's per-feature stats over the episode's frames (axis 0; shape (1,) for scalars)."""
    v = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
    v = v.astype(np.float64) if v.dtype != bool else v
    return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
            "std": v.std(0).tolist(), "count": [len(v)]}


class _ImageStats:
    """Per-channel min/max/mean/std of frames in [0, 1], shaped (C, 1, 1) as LeRobot stores them."""

    def __init__(self, channels: int):
        self.lo, self.hi = np.full(channels, 255.0), np.zeros(channels)
        self.s, self.s2, self.n, self.frames = np.zeros(channels), np.zeros(channels), 0, 0

    def add(self, frames: np.ndarray) -> None:
        px = frames.reshape(-1, frames.shape[-1]).astype(np.float64)
        self.lo, self.hi = np.minimum(self.lo, px.min(0)), np.maximum(self.hi, px.max(0))
        self.s += px.sum(0)
        self.s2 += (px * px).sum(0)
        self.n += len(px)
        self.frames += len(frames)

    def result(self) -> dict:
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean * mean, 0.0))
        shape = lambda a: (a / 255.0)[:, None, None].tolist()  # noqa: E731
        return {"min": shape(self.lo), "max": shape(self.hi), "mean": shape(mean), "std": shape(std),
                "count": [self.frames]}


def _hf_features(feats: list[Feature]) -> dict:
    """The `huggingface` schema metadata `datasets` writes, so the parquet loads with the right types."""
    out = {}
    for f in feats:
        if f.dtype == "video":
            continue
        value = {"dtype": f.dtype, "_type": "Value"}
        out[f.name] = value if f.shape == [1] else {"feature": value, "length": f.shape[0], "_type": "Sequence"}
    return out


def _column(pa, values: np.ndarray, feature: Feature):
    if feature.shape == [1]:
        return pa.array(values.reshape(len(values)))
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def export_lerobot(path: str | os.PathLike, out_dir: str | os.PathLike, task: str | None = None,
                   progress: bool = True) -> dict:
    """Write the dataset (built in a temp dir, renamed into place at the end); returns a summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = open_store(path)
    require_keys(store, REQUIRED, "a LeRobot dataset needs observation.state, action and timestamps")
    out_dir = fresh_output(out_dir, "export-lerobot")
    if store.n_episodes == 0:
        raise ToolError(f"{store.path}: no committed episodes to export")
    feats, skipped = features_of(store)
    videos = [f for f in feats if f.dtype == "video"]
    columns = [f for f in feats if f.dtype != "video"]
    fps, task = export_fps(store), task or default_task(store)
    meta = store.episodes_meta()
    tmp = out_dir.with_name(f".{out_dir.name}.exporting-{uuid.uuid4().hex[:8]}")
    bar = tqdm_bar(store.n_steps, "export-lerobot", "frame", progress)
    jitter = offset = 0.0
    try:
        hf_meta = {b"huggingface": json.dumps({"info": {"features": _hf_features(columns)}}).encode()}
        episodes, ep_stats, index = [], [], 0
        for m in meta:
            i, n, chunk = m["index"], m["length"], m["index"] // CHUNKS_SIZE
            lowdim = [f.key for f in columns if f.key]
            data = store.read_episode(i, [*lowdim, "stamp"])
            t = data["stamp"] - data["stamp"][0]
            if n > 1:
                jitter = max(jitter, float(np.abs(np.diff(t) - 1.0 / fps).max()))
            offset = max(offset, float(np.abs(t - np.arange(n) / fps).max()))
            done = np.zeros(n, bool)
            done[-1] = True
            computed = {"next.done": done, "timestamp": t.astype(np.float32), "frame_index": np.arange(n),
                        "episode_index": np.full(n, i), "index": np.arange(index, index + n),
                        "task_index": np.zeros(n, np.int64)}
            values = {f.name: (data[f.key] if f.key else computed[f.name]) for f in columns}
            table = pa.table({f.name: _column(pa, values[f.name], f) for f in columns}).replace_schema_metadata(hf_meta)
            target = tmp / DATA_PATH.format(episode_chunk=chunk, episode_index=i)
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, target)
            stats = {f.name: _stats(values[f.name]) for f in columns}
            stats.update(_write_videos(store, i, chunk, videos, tmp, fps, bar))
            if not videos:
                bar.update(n)
            episodes.append({"episode_index": i, "tasks": [task], "length": n})
            ep_stats.append({"episode_index": i, "stats": stats})
            index += n
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": (store.attrs.get("profile") or {}).get("name", "unknown"),
            "total_episodes": len(meta), "total_frames": index, "total_tasks": 1,
            "total_videos": len(meta) * len(videos), "total_chunks": math.ceil(len(meta) / CHUNKS_SIZE),
            "chunks_size": CHUNKS_SIZE, "fps": fps, "splits": {"train": f"0:{len(meta)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if videos else None,
            "features": {f.name: f.spec() for f in feats},
        }
        _write_meta(tmp, info, episodes, ep_stats, [{"task_index": 0, "task": task}],
                    [{"episode_index": m["index"], **{k: m[k] for k in ("source", "success", "start_time", "duration",
                                                                         "base_ckpt", "health")}} for m in meta])
        if out_dir.exists():
            out_dir.rmdir()  # fresh_output allowed only an empty directory
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return {"out": out_dir, "episodes": len(meta), "frames": index, "videos": len(meta) * len(videos),
            "fps": fps, "skipped": skipped, "max_timestamp_jitter_s": jitter, "max_offset_from_grid_s": offset}


def _write_videos(store, episode: int, chunk: int, videos: list[Feature], root: Path, fps, bar) -> dict:
    if not videos:
        return {}
    writers, stats = {}, {f.name: _ImageStats(f.shape[2]) for f in videos}
    try:
        for f in videos:
            target = root / VIDEO_PATH.format(episode_chunk=chunk, video_key=f.name, episode_index=episode)
            writers[f.name] = Mp4Writer(target, fps, f.shape[1], f.shape[0])
        for _, block in iter_blocks(store, episode, [f.key for f in videos]):
            for f in videos:
                stats[f.name].add(block[f.key])
                for frame in block[f.key]:
                    writers[f.name].write(frame)
            bar.update(len(block[videos[0].key]))
    finally:
        for w in writers.values():
            w.close()
    return {name: s.result() for name, s in stats.items()}


def _write_meta(root: Path, info: dict, episodes: list, ep_stats: list, tasks: list, provenance: list) -> None:
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    for name, rows in (("episodes", episodes), ("episodes_stats", ep_stats), ("tasks", tasks),
                       ("robot_rl_episodes", provenance)):
        (meta / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
