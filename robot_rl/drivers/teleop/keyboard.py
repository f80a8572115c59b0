"""Keyboard teleop from the terminal: episode control plus joint jogging.

Keys: space start/stop recording · y success · n failure · d discard ·
1..9 select joint · w/s (or arrow up/down) jog the selected joint · o/c open/close the gripper.
Reads stdin in raw mode in its own thread, so it needs an interactive terminal.
"""
from __future__ import annotations

import os
import queue
import select
import sys
import termios
import threading
import tty

import numpy as np

from robot_rl.drivers.teleop.base import DISCARD, FAILURE, START, STOP, SUCCESS, DeviceError, TeleopInput

EVENT_KEYS = {"y": SUCCESS, "n": FAILURE, "d": DISCARD}
ARROWS = {"\x1b[A": "w", "\x1b[B": "s"}


class KeyMapper:
    """Pure key -> input logic (tested without a terminal)."""

    def __init__(self, profile, jog_step: float):
        self.lower = np.array([j.lower for j in profile.robot.joints])
        self.upper = np.array([j.upper for j in profile.robot.joints])
        self.gripper = profile.robot.joint_names.index(profile.robot.gripper_joint) if profile.robot.gripper_joint else None
        self.jog_step = jog_step
        self.selected = 0
        self.recording = False
        self.target: np.ndarray | None = None

    def apply(self, keys: list[str], joint_pos: np.ndarray) -> TeleopInput:
        events: list[str] = []
        moved = False
        if self.target is None:
            self.target = np.asarray(joint_pos, dtype=float).copy()
        for key in keys:
            key = ARROWS.get(key, key)
            if key == " ":
                self.recording = not self.recording
                events.append(START if self.recording else STOP)
            elif key in EVENT_KEYS:
                events.append(EVENT_KEYS[key])
                self.recording = self.recording and key not in ("y", "n", "d")
            elif key.isdigit() and 1 <= int(key) <= len(self.lower):
                self.selected = int(key) - 1
            elif key in ("w", "s"):
                step = self.jog_step if key == "w" else -self.jog_step
                scale = (self.upper[self.selected] - self.lower[self.selected]) / (2 * np.pi) if self.selected == self.gripper else 1.0
                self.target[self.selected] += step * scale
                moved = True
            elif key in ("o", "c") and self.gripper is not None:
                self.target[self.gripper] = self.upper[self.gripper] if key == "o" else self.lower[self.gripper]
                moved = True
        self.target = np.clip(self.target, self.lower, self.upper)
        return TeleopInput(target=self.target.copy(), intervening=moved, events=events)


class KeyboardDevice:
    name = "keyboard"

    def __init__(self, profile, params):
        self.mapper = KeyMapper(profile, params.jog_step)
        self.keys: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved = None

    def start(self) -> None:
        if not sys.stdin.isatty():
            raise DeviceError("keyboard teleop needs an interactive terminal on stdin "
                              "(run the teleop node in the foreground, or use device: expert / spacemouse / leader_arm)")
        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._read_keys, args=(fd,), daemon=True)
        self._thread.start()

    def _read_keys(self, fd: int) -> None:
        while not self._stop.is_set():
            if select.select([fd], [], [], 0.05)[0]:
                ch = os.read(fd, 3).decode(errors="ignore")
                self.keys.put(ch if ch in ARROWS else ch[:1])

    def read(self, joint_pos: np.ndarray, task_state: dict | None) -> TeleopInput:
        keys = []
        while not self.keys.empty():
            keys.append(self.keys.get_nowait())
        return self.mapper.apply(keys, joint_pos)

    def close(self) -> None:
        self._stop.set()
        if self._saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None
