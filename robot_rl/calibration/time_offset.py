"""Stream latencies relative to joint states, and the stamp corrections the aligner applies.

A camera's capture stamp can be late (transfer, driver stamping on arrival); then the as-of join of
DESIGN.md §4 pairs images with joint states from later than what the image shows. The latency L of
a stream is (stamp - true capture time) measured against /robot/joint_states: while the arm
wiggles, the image-difference energy between consecutive frames is regressed on each joint's motion
over the same interval shifted by a candidate L (per-joint weights, since a camera sees some joints
move more than others), and L is the shift that explains the energy best.
A tactile stream is matched the same way against a joint-state signal it follows (gripper effort
while squeezing an object).

Results live in calibration/<setup>/time_offsets.yaml; `stamp_corrections(profile)` turns them into
"seconds to add to each aligner stream's capture stamps" (= -L), zero for streams never calibrated.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.calibration.files import CalibrationError, write_yaml
from robot_rl.config.typed import check, load_file
from robot_rl.paths import calibration_dir

MIN_CORRELATION = 0.5


@dataclass
class LatencyEstimate:
    stream: str  # camera/<name> | tactile/<name>
    latency_s: float  # stamp minus true capture time, relative to joint states
    correlation: float  # peak correlation of the two motion signals (1 = identical shape)
    samples: int

    def summary(self) -> str:
        return (f"{self.stream}: latency {self.latency_s * 1e3:+.1f} ms (correlation {self.correlation:.2f}, "
                f"{self.samples} samples)")


def image_motion_energy(frames: np.ndarray, max_side: int = 64) -> np.ndarray:
    """Mean absolute grey-level change between consecutive frames, (N-1,), on a downsampled image."""
    frames = np.asarray(frames)
    step = max(1, int(np.ceil(max(frames.shape[1:3]) / max_side)))
    small = frames[:, ::step, ::step].astype(np.float32)
    gray = small.mean(axis=3) if small.ndim == 4 else small
    return np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))


def _interp_rows(t: np.ndarray, stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values (N, J) sampled at stamps, linearly interpolated at times t (any shape) -> t.shape + (J,)."""
    return np.stack([np.interp(t, stamps, values[:, j]) for j in range(values.shape[1])], axis=-1)


def _best_lag(lags: np.ndarray, corr: np.ndarray, stream: str, samples: int, max_lag_s: float) -> LatencyEstimate:
    if not np.any(np.isfinite(corr)):
        raise CalibrationError(f"{stream}: no motion in the recording; move the arm (or squeeze) while recording")
    i = int(np.nanargmax(corr))
    if corr[i] < MIN_CORRELATION:
        raise CalibrationError(f"{stream}: the signals hardly correlate (best r = {corr[i]:.2f} at "
                               f"{lags[i] * 1e3:+.0f} ms): make the motion larger and visible to the sensor, keep the "
                               "rest of the scene still")
    if i in (0, len(lags) - 1):
        raise CalibrationError(f"{stream}: the best match lies at the edge of the +-{max_lag_s:g} s search window; "
                               "the latency is larger than that, or the signals do not match: widen --max-lag or "
                               "check that the sensor really sees the motion")
    a, b, c = corr[i - 1], corr[i], corr[i + 1]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
    lag = float(lags[i] + shift * (lags[1] - lags[0]))
    return LatencyEstimate(stream, lag, float(b), samples)


def _pearson_rows(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Correlation of x (N,) with each row of Y (L, N)."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(xc) * np.linalg.norm(Yc, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, (Yc @ xc) / denom, np.nan)


def _multiple_correlation(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """For each lag l, the correlation of y (N,) with its least-squares fit on X[l] (N, J) + intercept."""
    yc = y - y.mean()
    out = np.full(len(X), np.nan)
    if yc @ yc < 1e-18:
        return out
    for i, features in enumerate(X):
        A = np.c_[features, np.ones(len(y))]
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        r = y - A @ coef
        out[i] = np.sqrt(max(0.0, 1.0 - (r @ r) / (yc @ yc)))
    return out


def estimate_camera_latency(stream: str, joint_stamps, joint_positions, frame_stamps, frames, *,
                            max_lag_s: float = 0.4, resolution_s: float = 0.001) -> LatencyEstimate:
    """Latency of a camera from a recording of the arm moving (frames (N,H,W[,3]), stamps in seconds)."""
    js = np.asarray(joint_stamps, np.float64)
    q = np.asarray(joint_positions, np.float64).reshape(len(js), -1)
    fs = np.asarray(frame_stamps, np.float64)
    if len(fs) < 10 or len(js) < 10:
        raise CalibrationError(f"{stream}: only {len(fs)} frames and {len(js)} joint states recorded; record longer")
    energy = image_motion_energy(frames)
    t0, t1 = fs[:-1], fs[1:]
    keep = (t0 - max_lag_s >= js[0]) & (t1 + max_lag_s <= js[-1])
    if keep.sum() < 10:
        raise CalibrationError(f"{stream}: camera and joint-state recordings overlap too little; record longer")
    energy, t0, t1 = energy[keep], t0[keep], t1[keep]
    lags = np.arange(-max_lag_s, max_lag_s + resolution_s / 2, resolution_s)
    motion = np.abs(_interp_rows(t1[None, :] - lags[:, None], js, q) - _interp_rows(t0[None, :] - lags[:, None], js, q))
    return _best_lag(lags, _multiple_correlation(energy, motion), stream, int(keep.sum()), max_lag_s)


def estimate_signal_latency(stream: str, ref_stamps, ref_signal, stamps, signal, *, max_lag_s: float = 0.4,
                            resolution_s: float = 0.001) -> LatencyEstimate:
    """Latency of `signal` behind a reference signal from joint states (e.g. tactile total vs gripper
    effort): the shift L for which signal(t + L) best matches ref(t)."""
    rs, rv = np.asarray(ref_stamps, np.float64), np.asarray(ref_signal, np.float64)
    ss, sv = np.asarray(stamps, np.float64), np.asarray(signal, np.float64)
    keep = (rs - max_lag_s >= ss[0]) & (rs + max_lag_s <= ss[-1]) if len(ss) else np.zeros(len(rs), bool)
    if keep.sum() < 10:
        raise CalibrationError(f"{stream}: the recordings overlap too little; record longer")
    rs, rv = rs[keep], rv[keep]
    lags = np.arange(-max_lag_s, max_lag_s + resolution_s / 2, resolution_s)
    shifted = np.interp(rs[None, :] + lags[:, None], ss, sv)
    return _best_lag(lags, _pearson_rows(rv, shifted), stream, int(keep.sum()), max_lag_s)


def wiggle_schedule(center, lower, upper, moving: dict[int, float], duration_s: float, rate_hz: float,
                    seed: int = 0) -> np.ndarray:
    """(T, n) position targets around `center`: joint i in `moving` jumps to random offsets within
    +-amplitude, holding each 0.25-0.7 s. Irregular holds make the correlation peak unique."""
    rng = np.random.default_rng(seed)
    center = np.asarray(center, np.float64)
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    n = int(round(duration_s * rate_hz))
    out = np.repeat(center[None, :], n, axis=0)
    k = int(0.5 * rate_hz)  # start still
    while k < n:
        hold = int(rng.uniform(0.25, 0.7) * rate_hz)
        target = center.copy()
        for i, amp in moving.items():
            target[i] += rng.uniform(-amp, amp)
        out[k:k + hold] = np.clip(target, lower + 0.02 * (upper - lower), upper - 0.02 * (upper - lower))
        k += hold
    return out


# -- the file and the corrections ----------------------------------------------------------------
@dataclass
class TimeOffsetsFile:
    latency_s: dict[str, float]  # camera/<name> | tactile/<name> -> stamp minus capture time (s)
    reference: str = "/robot/joint_states"
    quality: dict[str, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name, value in self.latency_s.items():
            check(name.split("/")[0] in ("camera", "tactile") and "/" in name,
                  f"stream {name!r} must be camera/<name> or tactile/<name>", "latency_s")
            check(abs(value) < 2.0, f"{name}: |latency| {value} s is implausible (limit 2 s)", "latency_s")


def time_offsets_path(setup: str) -> Path:
    return calibration_dir() / setup / "time_offsets.yaml"


def load_latencies(setup: str) -> dict[str, float]:
    """Latency per sensor stream (camera/<name>, tactile/<name>); {} without a file."""
    path = time_offsets_path(setup)
    return dict(load_file(TimeOffsetsFile, path).latency_s) if path.is_file() else {}


def write_time_offsets(setup: str, estimates: list[LatencyEstimate], path: str | Path | None = None) -> Path:
    """Merge `estimates` into the setup's file (streams not re-measured keep their values)."""
    path = Path(path) if path else time_offsets_path(setup)
    data = load_file(TimeOffsetsFile, path) if path.is_file() else TimeOffsetsFile({})
    for e in estimates:
        data.latency_s[e.stream] = round(e.latency_s, 5)
        data.quality[e.stream] = {"correlation": round(e.correlation, 3), "samples": e.samples}
    data.meta.update(recorded=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     tool="robot-rl calibrate time-offset")
    data.validate()
    return write_yaml(path, {"reference": data.reference, "latency_s": data.latency_s, "quality": data.quality,
                             "meta": data.meta},
                      header="stream latency behind /robot/joint_states: capture stamp minus true capture time (s).\n"
                             "The aligner adds -latency to each stream's stamps (robot_rl.calibration.time_offset."
                             "stamp_corrections).")


def stamp_corrections(profile, latencies: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds to add to the capture stamps of each as-of-aligner stream of `profile` (the stream
    names of robot_rl.data.recording: joint_state, color/<cam>, depth/<cam>, tactile/<sensor>)
    before `AsOfAligner.add`; 0.0 for streams without a calibrated latency."""
    lat = load_latencies(profile.name) if latencies is None else latencies
    out = {"joint_state": 0.0}
    for cam in profile.cameras:
        out[f"color/{cam.name}"] = out[f"depth/{cam.name}"] = -float(lat.get(f"camera/{cam.name}", 0.0))
    for tac in profile.tactile:
        out[f"tactile/{tac.name}"] = -float(lat.get(f"tactile/{tac.name}", 0.0))
    return out
