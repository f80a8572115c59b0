"""A fine-tuning session's episode loop (no ROS): reset -> record -> policy acts -> end -> label -> commit.

The episode manager node implements `SessionBackend` with service calls and feeds `step()` from the
sim task state (or operator signals); this class owns the sequencing and the statistics, so the
same loop runs a sim session unattended and a real one with an operator.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class SessionBackend(Protocol):
    def reset(self) -> dict: ...  # returns the new sim task state ({} on a real robot)
    def start_recording(self) -> None: ...
    def set_policy(self, enabled: bool) -> None: ...
    def commit(self, success: bool) -> dict: ...  # labels, stops and commits; returns {"index", "health"}
    def discard(self) -> None: ...


class EpisodeAborted(RuntimeError):
    """The robot stopped stepping (or the session is stopping): the episode is discarded."""


@dataclass
class SessionStats:
    episodes: int = 0
    successes: int = 0
    aborted: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)

    def success_rate(self, last: int | None = None) -> float:
        items = self.history[-last:] if last else self.history
        return sum(r["success"] for r in items) / len(items) if items else 0.0


class EpisodeSession:
    def __init__(self, backend: SessionBackend, *, max_steps: int, label: str, reset: str,
                 step_timeout_s: float):
        self.backend = backend
        self.max_steps, self.label_source, self.reset_mode = max_steps, label, reset
        self.step_timeout_s = step_timeout_s
        self.stats = SessionStats()
        self._cond = threading.Condition()
        self._steps = 0
        self._success = False
        self._episode = None
        self._operator_stop = False
        self._operator_label: bool | None = None
        self._continue = False
        self.stopping = False

    # -- signals (from ROS callbacks) -----------------------------------------------------------
    def step(self, success: bool, episode=None) -> None:
        """One control step happened (a sim task state of the current episode, or a command tick)."""
        with self._cond:
            if self._episode is not None and episode is not None and episode != self._episode:
                return  # a late message from the previous episode
            self._steps += 1
            self._success = self._success or success
            self._cond.notify_all()

    def operator_stop(self) -> None:
        with self._cond:
            self._operator_stop = True
            self._cond.notify_all()

    def operator_label(self, success: bool) -> None:
        with self._cond:
            self._operator_label = success
            self._cond.notify_all()

    def operator_continue(self) -> None:
        with self._cond:
            self._continue = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    # -- the loop -------------------------------------------------------------------------------
    def _wait(self, predicate, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate() or self.stopping, timeout) and not self.stopping

    def run_episode(self) -> dict:
        if self.reset_mode == "operator":
            with self._cond:
                self._continue = False
            if not self._wait(lambda: self._continue, None):
                raise EpisodeAborted("session stopping")
        state = self.backend.reset()
        with self._cond:
            self._steps, self._success, self._operator_stop, self._operator_label = 0, False, False, None
            self._episode = state.get("episode")
        self.backend.start_recording()
        self.backend.set_policy(True)
        start = time.monotonic()
        last_steps, last_progress = 0, time.monotonic()
        try:
            while True:
                done = self._wait(lambda: self._steps > last_steps or self._operator_stop, 0.5)
                if self.stopping:
                    raise EpisodeAborted("session stopping")
                with self._cond:
                    steps, success, stop = self._steps, self._success, self._operator_stop
                if steps > last_steps:
                    last_steps, last_progress = steps, time.monotonic()
                elif not done and time.monotonic() - last_progress > self.step_timeout_s:
                    raise EpisodeAborted(f"no control step for {self.step_timeout_s:.0f} s")
                if (success and self.label_source == "sim") or stop or steps >= self.max_steps:
                    break
        except EpisodeAborted:
            self.backend.set_policy(False)
            self.backend.discard()
            self.stats.aborted += 1
            raise
        self.backend.set_policy(False)
        if self.label_source == "operator":
            if not self._wait(lambda: self._operator_label is not None, None):
                self.backend.discard()
                raise EpisodeAborted("session stopping before the episode was labelled")
            success = bool(self._operator_label)
        committed = self.backend.commit(success)
        result = {"index": committed.get("index"), "success": success, "steps": last_steps,
                  "seconds": round(time.monotonic() - start, 2), "health_ok": committed.get("health", {}).get("ok")}
        self.stats.episodes += 1
        self.stats.successes += int(success)
        self.stats.steps += last_steps
        self.stats.history.append(result)
        return result
