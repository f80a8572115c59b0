"""Taxel force scale from a known reference load, and dead / noisy taxel detection.

Builds on robot_rl/drivers/tactile (baseline recording, the Calibration file the tactile node
loads): record frames with nothing touching (the zero), then with a reference load resting on the
pad, and derive
- the scale in newtons per count: one number so the summed response equals the load, or, with a
  flat press that loads every taxel alike (`per_taxel`), one gain per taxel;
- dead taxels (stuck at an ADC rail, or no response under a load the others feel) get scale 0,
  so they read 0 instead of garbage; noisy taxels (zero spread far above the others') are flagged.
Both lists go into the file's `notes` so the node's users can see them.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from robot_rl.calibration.files import CalibrationError
from robot_rl.drivers.tactile.calibration import ADC_FULL_SCALE, Calibration, baseline_from_frames

NOISY_FACTOR = 4.0  # noise above this many times the median taxel noise ...
NOISE_FLOOR = 3.0  # ... and above this many counts -> noisy
DEAD_RESPONSE = 0.1  # loaded response below this fraction of the median response -> dead


def taxel_health(baseline_frames: np.ndarray, loaded_frames: np.ndarray | None = None) -> dict:
    """Per-taxel noise/response and the dead and noisy taxels as (row, col) lists."""
    base = np.asarray(baseline_frames, np.float64)
    if base.ndim != 3 or len(base) < 2:
        raise CalibrationError(f"need at least 2 baseline frames (N, rows, cols), got shape {base.shape}")
    mean, noise = base.mean(axis=0), base.std(axis=0)
    dead = (noise == 0) & ((mean <= 0) | (mean >= ADC_FULL_SCALE))  # stuck at a rail
    response = None
    if loaded_frames is not None:
        loaded = np.asarray(loaded_frames, np.float64)
        if loaded.shape[1:] != base.shape[1:] or len(loaded) == 0:
            raise CalibrationError(f"loaded frames {loaded.shape} do not match the baseline frames {base.shape}")
        response = loaded.mean(axis=0) - mean
        alive = response[~dead]
        typical = np.median(alive[alive > 0]) if np.any(alive > 0) else 0.0
        dead |= response < DEAD_RESPONSE * typical
    noisy = ~dead & (noise > max(NOISY_FACTOR * float(np.median(noise)), NOISE_FLOOR))
    cells = lambda m: [[int(r), int(c)] for r, c in zip(*np.nonzero(m))]  # noqa: E731
    return {"mean": mean, "noise": noise, "response": response, "dead": cells(dead), "noisy": cells(noisy),
            "dead_mask": dead, "noisy_mask": noisy}


def scale_from_reference(baseline_frames: np.ndarray, loaded_frames: np.ndarray, load_newtons: float,
                         per_taxel: bool = False, previous: Calibration | None = None, **meta) -> Calibration:
    """A Calibration (baseline + scale in N/count) from frames without and with a reference load."""
    if not load_newtons > 0:
        raise CalibrationError(f"the reference load must be a positive force in newtons, got {load_newtons}")
    health = taxel_health(baseline_frames, loaded_frames)
    dead, response = health["dead_mask"], health["response"]
    if dead.all():
        raise CalibrationError("no taxel responded to the load: check the sensor wiring, that the load rests on the "
                               "pad, and that the frames were recorded after placing it")
    live = response[~dead]
    total = float(live.sum())
    if total < 10 * max(1.0, float(health["noise"][~dead].mean())) * np.sqrt(live.size):
        raise CalibrationError(f"the load raised the readings by only {total:.0f} counts in total, within the noise: "
                               "use a heavier reference load or check that it rests on the pad")
    if per_taxel:
        scale = np.where(dead, 0.0, load_newtons / live.size / np.where(dead, 1.0, response))
        if np.any(scale < 0):
            raise CalibrationError("some taxels read lower under load: a flat press must load every taxel; "
                                   "use per_taxel=False for a load on part of the pad")
    else:
        scale = np.where(dead, 0.0, load_newtons / total)
    zero = baseline_from_frames(np.asarray(baseline_frames), None, **meta)
    notes = dict(getattr(previous, "meta", {}).get("notes", {}) or {})
    notes.update(reference_load_n=float(load_newtons), method="per_taxel" if per_taxel else "uniform",
                 dead_taxels=health["dead"], noisy_taxels=health["noisy"],
                 response_counts=round(total, 1))
    return Calibration(zero.baseline, scale.astype(np.float32), "N", **{**zero.meta, "notes": notes})


def record_frames(port: str, baud: int, rows: int, cols: int, seconds: float, timeout_s: float = 10.0) -> np.ndarray:
    """(N, rows, cols) raw frames for `seconds` from the sensor on `port` (stop the tactile node first).

    Like drivers.tactile.calibrate.record_baseline, but keeps every frame: per-taxel noise needs them."""
    from robot_rl.drivers.tactile.serial_driver import SerialTactileDriver, TactileError

    driver = SerialTactileDriver(port, baud, rows, cols, retry_max_s=1.0, no_frames_timeout_s=min(2.0, timeout_s / 2),
                                 on_log=lambda level, msg: None)
    frames: list[np.ndarray] = []
    start: list[float] = []
    done = threading.Event()

    def on_sample(sample) -> None:
        now = time.monotonic()
        if not start:
            start.append(now)
        if now - start[0] >= seconds:
            done.set()
        elif not done.is_set():
            frames.append(np.array(sample.raw, np.float32))

    thread = threading.Thread(target=driver.run, args=(on_sample, done.is_set), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s + seconds
    while not done.wait(0.05) and time.monotonic() < deadline:
        pass
    done.set()
    thread.join(timeout=5.0)
    if not frames:
        raise TactileError(driver.last_error or f"no frames from {port} at {baud} baud within {timeout_s:g} s")
    return np.stack(frames)
