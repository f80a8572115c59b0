"""`video`: an MP4 of an episode's cameras side by side with a time/step overlay, and the MP4
writer the LeRobot export shares. cv2's mp4v (MPEG-4 Part 2) is the encoder available in
opencv-python-headless; AV1/H.264 would need ffmpeg builds this stack does not ship."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robot_rl.data.tools.common import (
    ToolError, camera_keys, check_episode, iter_blocks, open_store, require_keys, tqdm_bar,
)

FOURCC = "mp4v"


class Mp4Writer:
    """cv2.VideoWriter for RGB frames of one fixed size; raises ToolError if cv2 cannot encode."""

    def __init__(self, out: Path, fps: float, width: int, height: int):
        import cv2

        self._cv2 = cv2
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.size, self.frames = out, (width, height), 0
        self._writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (width, height))
        if not self._writer.isOpened():
            raise ToolError(f"{out}: cv2 cannot open an {FOURCC} MP4 writer ({width}x{height} at {fps} fps)")

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[1::-1] != self.size:
            raise ToolError(f"{self.out}: frame {rgb.shape[1]}x{rgb.shape[0]} does not match the video's {self.size}")
        self._writer.write(self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tile(frames: list[np.ndarray], height: int) -> np.ndarray:
    """Frames side by side at a common height (aspect kept)."""
    import cv2

    out = []
    for f in frames:
        if f.shape[0] != height:
            f = cv2.resize(f, (max(1, round(f.shape[1] * height / f.shape[0])), height), interpolation=cv2.INTER_AREA)
        out.append(f)
    return np.concatenate(out, axis=1)


def _overlay(img: np.ndarray, text: str) -> None:
    import cv2

    scale = max(0.3, img.shape[0] / 400)
    org = (3, 3 + int(22 * scale))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def episode_video(path: str | os.PathLike, episode: int, out: str | os.PathLike | None = None,
                  fps: float | None = None, progress: bool = True) -> dict:
    """Write the video; returns {"out", "frames", "width", "height", "fps", "cameras"}. `fps`
    defaults to the store's control rate, so the video plays in real time (one frame per step)."""
    store = open_store(path)
    episode = check_episode(store, episode)
    cams = camera_keys(store)
    if not cams:
        raise ToolError(f"{store.path}: no camera key (obs/camera_<name>, H×W×3 uint8) to make a video of")
    require_keys(store, ["stamp"], "the overlay shows the capture time")
    fps = float(store.attrs["control_rate_hz"] if fps is None else fps)
    if fps <= 0:
        raise ToolError(f"--fps must be positive, got {fps}")
    out = Path(out) if out else store.path.with_name(f"{store.path.stem}_ep{episode}.mp4")
    height = store.keys[next(iter(cams.values()))].shape[0]
    width = _tile([np.zeros(store.keys[k].shape, np.uint8) for k in cams.values()], height).shape[1]
    length = store.episodes_meta()[episode]["length"]
    t0 = None
    bar = tqdm_bar(length, f"video ep {episode}", "frame", progress)
    with Mp4Writer(out, fps, width, height) as writer:
        for first, block in iter_blocks(store, episode, [*cams.values(), "stamp"]):
            t0 = float(block["stamp"][0]) if t0 is None else t0
            for i in range(len(block["stamp"])):
                img = _tile([block[k][i] for k in cams.values()], height)
                _overlay(img, f"t={block['stamp'][i] - t0:.2f}s step {first + i + 1}/{length}")
                writer.write(img)
            bar.update(len(block["stamp"]))
    bar.close()
    return {"out": out, "frames": writer.frames, "width": width, "height": height, "fps": fps, "cameras": list(cams)}
