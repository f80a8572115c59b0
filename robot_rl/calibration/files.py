"""What every calibration step shares without heavy imports: its error type and atomic YAML writes
(the sim node imports this path, so no OpenCV here)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml


class CalibrationError(RuntimeError):
    """A calibration cannot be made from what was collected; the message says what to do instead."""


def write_yaml(path: str | Path, data: dict, header: str = "") -> Path:
    """Write atomically, so a node starting meanwhile never reads half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    text = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    tmp.write_text(text + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120))
    os.replace(tmp, path)
    return path
