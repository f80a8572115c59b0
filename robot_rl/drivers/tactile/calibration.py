"""Per-taxel zero and scale: calibrated = (raw_counts - baseline) * scale, as float32.

Stored as YAML in `calibration/<profile name>/<sensor>.yaml` (see hardware/tactile/README.md).
Resistive taxels drift and differ one from another, so the zero is re-recorded per setup with
nothing touching the pad (`record_baseline`); the scale defaults to 1/4095, i.e. values are the
fraction of ADC full scale above zero, until a force calibration replaces it (units: N).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from robot_rl.config.typed import ConfigError, check, load_file, to_dict
from robot_rl.paths import calibration_dir

ADC_FULL_SCALE = 4095.0  # 12-bit ADC (PROTOCOL.md: raw values are 12-bit counts in uint16)
DEFAULT_UNITS = "adc_full_scale"


@dataclass
class CalibrationFile:
    """The YAML schema (one file per sensor)."""

    sensor: str
    rows: int
    cols: int
    baseline: list[list[float]]  # raw counts with nothing touching, rows x cols
    scale: float | list[list[float]] = 1.0 / ADC_FULL_SCALE  # units per count, one number or rows x cols
    units: str = DEFAULT_UNITS
    profile: str = ""
    recorded: str = ""  # ISO 8601 time of the baseline recording
    frames: int = 0  # frames averaged for the baseline
    noise_std: float = 0.0  # mean per-taxel standard deviation during the recording (counts)
    port: str = ""
    notes: dict = field(default_factory=dict)

    def validate(self) -> None:
        check(self.rows > 0 and self.cols > 0, f"taxel grid {self.rows}x{self.cols} must be positive", "rows")
        _check_grid(self.baseline, self.rows, self.cols, "baseline")
        if isinstance(self.scale, list):
            _check_grid(self.scale, self.rows, self.cols, "scale")


def _check_grid(grid: list[list[float]], rows: int, cols: int, name: str) -> None:
    check(len(grid) == rows and all(len(r) == cols for r in grid),
          f"must be {rows} rows of {cols} numbers (the sensor's taxel grid)", name)
    check(bool(np.all(np.isfinite(np.asarray(grid, dtype=float)))), "must be finite numbers", name)


class Calibration:
    """Applies baseline and scale; `apply` writes into a caller's pre-allocated float32 array."""

    def __init__(self, baseline: np.ndarray, scale: np.ndarray | float = 1.0 / ADC_FULL_SCALE,
                 units: str = DEFAULT_UNITS, **meta):
        self.baseline = np.ascontiguousarray(baseline, dtype=np.float32)
        self.scale = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, dtype=np.float32), self.baseline.shape))
        self.units = units
        self.meta = meta
        self.source: str = ""  # the file it came from ("" = defaults)

    @classmethod
    def default(cls, rows: int, cols: int) -> "Calibration":
        """No calibration recorded: zero baseline, fraction of ADC full scale."""
        return cls(np.zeros((rows, cols), np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.baseline.shape  # type: ignore[return-value]

    @property
    def is_default(self) -> bool:
        return not self.source

    def apply(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty(self.shape, np.float32)
        np.subtract(raw, self.baseline, out=out)
        np.multiply(out, self.scale, out=out)
        return out

    # -- files ----------------------------------------------------------------------------------
    @staticmethod
    def path_for(profile_name: str, sensor: str) -> Path:
        return calibration_dir() / profile_name / f"{sensor}.yaml"

    def save(self, path: str | Path, sensor: str) -> Path:
        """Write atomically (a crash never leaves half a file for the node to load)."""
        path = Path(path)
        short = np.vectorize(lambda x: float(f"{x:.9g}"), otypes=[float])  # float32 values, no float64 noise digits
        scale = short(self.scale).tolist() if np.ptp(self.scale) > 0 else float(short(self.scale.flat[0]))
        data = CalibrationFile(sensor=sensor, rows=self.shape[0], cols=self.shape[1],
                               baseline=np.round(self.baseline.astype(float), 3).tolist(), scale=scale,
                               units=self.units, **{k: v for k, v in self.meta.items()
                                                    if k in CalibrationFile.__dataclass_fields__})
        data.validate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(f"# tactile calibration: calibrated = (raw_counts - baseline) * scale  [{self.units}]\n"
                       + yaml.safe_dump(to_dict(data), sort_keys=False, default_flow_style=None, width=120))
        os.replace(tmp, path)
        self.source = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path, rows: int | None = None, cols: int | None = None) -> "Calibration":
        """Load and check against the profile's grid; errors name the file and field."""
        data = load_file(CalibrationFile, path)
        if rows is not None and (data.rows, data.cols) != (rows, cols):
            raise ConfigError(f"calibration is for a {data.rows}x{data.cols} grid but the profile says {rows}x{cols}; "
                              "re-record it (python -m robot_rl.drivers.tactile.calibrate)", "rows", path)
        meta = {k: getattr(data, k) for k in ("profile", "recorded", "frames", "noise_std", "port", "notes")}
        cal = cls(np.asarray(data.baseline, np.float32), np.asarray(data.scale, np.float32), data.units, **meta)
        cal.source = str(path)
        return cal

    @classmethod
    def load_or_default(cls, path: str | Path, rows: int, cols: int) -> "Calibration":
        return cls.load(path, rows, cols) if Path(path).is_file() else cls.default(rows, cols)


def baseline_from_frames(frames: np.ndarray, previous: Calibration | None = None, **meta) -> Calibration:
    """Zero = per-taxel mean of (N, rows, cols) raw frames; keeps a previous calibration's scale/units."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or len(frames) == 0:
        raise ValueError(f"need (N, rows, cols) frames, got shape {frames.shape}")
    meta.setdefault("recorded", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    meta.update(frames=int(len(frames)), noise_std=round(float(frames.std(axis=0).mean()), 3))
    if previous is not None and previous.shape == frames.shape[1:] and not previous.is_default:
        return Calibration(frames.mean(axis=0), previous.scale, previous.units, **meta)
    return Calibration(frames.mean(axis=0), **meta)
