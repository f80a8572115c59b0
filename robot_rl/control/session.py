"""A fine-tuning session's episode loop (no ROS): reset -> record -> policy acts -> end -> label -> commit.

The episode manager node implements `SessionBackend` with service calls and feeds `step()` from the
sim task state (or operator signals); this class owns the sequencing and the statistics, so the
same loop runs a sim session unattended and a real one with an operator.

Who says success (`label`): "sim" (ground truth ends the episode), "operator" (a label after the
stop), or "classifier": each step carries the reward classifier's success probability, a detector
(robot_rl.reward.detector.SuccessDetector: M consecutive frames above the threshold) ends the episode
as a success when it fires. When steps also carry the sim's ground truth, the result records both,
so a session reports how often the classifier agreed with it.
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
    compared: int = 0  # episodes labelled by the classifier that also had sim ground truth
    agreed: int = 0

    def agreement(self) -> float | None:
        """Fraction of compared episodes where the classifier's label matched the sim's ground truth."""
        return self.agreed / self.compared if self.compared else None

    def success_rate(self, last: int | None = None) -> float:
        items = self.history[-last:] if last else self.history
        return sum(r["success"] for r in items) / len(items) if items else 0.0


class EpisodeSession:
    def __init__(self, backend: SessionBackend, *, max_steps: int, label: str, reset: str,
                 step_timeout_s: float, detector=None):
        if label == "classifier" and detector is None:
            raise ValueError("label 'classifier' needs a success detector (from a reward classifier)")
        self.backend = backend
        # Whether the recorder may hold a recording this session did not finish: at the start (a previous
        # manager's), and after a start call that failed (its answer can be lost after the recorder
        # started, and every later start would then be refused as "already recording").
        self._recorder_unknown = True
        self.detector = detector  # update(p | None) -> fired; reset()
        self.max_steps, self.label_source, self.reset_mode = max_steps, label, reset
        self.step_timeout_s = step_timeout_s
        self.stats = SessionStats()
        self._cond = threading.Condition()
        self._steps = 0
        self._success = False
        self._truth: bool | None = None  # sim ground truth seen this episode (None: no step carried any)
        self._truth_step: int | None = None
        self._fired_step: int | None = None
        self._episode = None
        self._operator_stop = False
        self._operator_label: bool | None = None
        self._continue = False
        self.stopping = False

    # -- signals (from ROS callbacks) -----------------------------------------------------------
    def step(self, success: bool | None, episode=None, reward: float | None = None) -> None:
        """One control step happened (a sim task state of the current episode, or a command tick).
        `success`: the sim's ground truth (None: none, a real robot). `reward`: the classifier's
        success probability at this step (None: not evaluated or no valid observation)."""
        with self._cond:
            if self._episode is not None and episode is not None and episode != self._episode:
                return  # a late message from the previous episode
            self._steps += 1
            self._success = self._success or bool(success)
            if success is not None:
                self._truth = bool(self._truth) or bool(success)
                if success and self._truth_step is None:
                    self._truth_step = self._steps
            if self.detector is not None and self._fired_step is None and self.detector.update(reward):
                self._fired_step = self._steps
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
            self._truth, self._truth_step, self._fired_step = None, None, None
            if self.detector is not None:
                self.detector.reset()
            self._episode = state.get("episode")
        if self._recorder_unknown:
            self.backend.discard()
        self._recorder_unknown = True
        self.backend.start_recording()
        self._recorder_unknown = False
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
                    fired = self._fired_step is not None
                if steps > last_steps:
                    last_steps, last_progress = steps, time.monotonic()
                elif not done and time.monotonic() - last_progress > self.step_timeout_s:
                    raise EpisodeAborted(f"no control step for {self.step_timeout_s:.0f} s")
                if (success and self.label_source == "sim") or (fired and self.label_source == "classifier") \
                        or stop or steps >= self.max_steps:
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
        with self._cond:
            truth, truth_step, fired_step = self._truth, self._truth_step, self._fired_step
            reward_max = getattr(self.detector, "max_probability", None)
        if self.label_source == "classifier":
            success = fired_step is not None
        committed = self.backend.commit(success)
        result = {"index": committed.get("index"), "success": success, "steps": last_steps,
                  "seconds": round(time.monotonic() - start, 2), "health_ok": committed.get("health", {}).get("ok"),
                  "interventions": committed.get("health", {}).get("intervention_steps", 0)}
        if self.label_source == "classifier":
            result.update(label="classifier", classifier_step=fired_step,
                          reward_max=None if reward_max is None else round(float(reward_max), 4))
            if truth is not None:  # both labels: record the ground truth next to the classifier's
                result.update(sim_success=truth, sim_success_step=truth_step, agree=truth == success)
                self.stats.compared += 1
                self.stats.agreed += int(truth == success)
        self.stats.episodes += 1
        self.stats.successes += int(success)
        self.stats.steps += last_steps
        self.stats.history.append(result)
        return result
