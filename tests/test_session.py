"""The fine-tuning episode loop's sequencing, with an in-memory backend standing in for the ROS
services (the loop itself is plain Python; the ROS wiring is exercised end to end elsewhere)."""
import threading
import time

import pytest

from robot_rl.control.session import EpisodeAborted, EpisodeSession


class Backend:
    """Records the calls; `after_reset` starts the simulated robot's steps once the episode exists."""

    def __init__(self):
        self.calls = []
        self.episode = 0
        self.after_reset = []

    def reset(self):
        self.episode += 1
        self.calls.append("reset")
        for start in self.after_reset:
            start()
        return {"episode": self.episode}

    def start_recording(self):
        self.calls.append("start")

    def set_policy(self, enabled):
        self.calls.append(f"policy={enabled}")

    def commit(self, success):
        self.calls.append(f"commit={success}")
        return {"index": self.episode - 1, "health": {"ok": True}}

    def discard(self):
        self.calls.append("discard")


def drive(backend, session, steps, success_at=None, episode=1, delay=0.005):
    """Once the backend resets, send `steps` control steps (after recording starts)."""
    def run():
        while "policy=True" not in backend.calls:
            time.sleep(0.001)
        for i in range(steps):
            session.step(success_at is not None and i + 1 >= success_at, episode)
            time.sleep(delay)
    backend.after_reset.append(lambda: threading.Thread(target=run, daemon=True).start())


def test_sim_episode_ends_on_success_and_commits_success():
    backend = Backend()
    s = EpisodeSession(backend, max_steps=50, label="sim", reset="auto", step_timeout_s=5)
    drive(backend, s, 30, success_at=12)
    result = s.run_episode()
    assert result["success"] and result["steps"] == 12
    assert backend.calls == ["reset", "discard", "start", "policy=True", "policy=False", "commit=True"]
    assert s.stats.success_rate() == 1.0


def test_timeout_commits_a_failure():
    backend = Backend()
    s = EpisodeSession(backend, max_steps=10, label="sim", reset="auto", step_timeout_s=5)
    drive(backend, s, 20)
    result = s.run_episode()
    assert not result["success"] and result["steps"] == 10 and backend.calls[-1] == "commit=False"


def test_stalled_robot_aborts_and_discards():
    backend = Backend()
    s = EpisodeSession(backend, max_steps=10, label="sim", reset="auto", step_timeout_s=0.3)
    drive(backend, s, 2)
    with pytest.raises(EpisodeAborted, match="no control step"):
        s.run_episode()
    assert backend.calls[-2:] == ["policy=False", "discard"] and s.stats.aborted == 1


def test_late_messages_of_the_previous_episode_are_ignored():
    backend = Backend()
    s = EpisodeSession(backend, max_steps=5, label="sim", reset="auto", step_timeout_s=5)
    drive(backend, s, 5, success_at=1, episode=99)  # all from another episode
    drive(backend, s, 5, episode=1, delay=0.02)
    assert not s.run_episode()["success"]


def test_operator_labels_and_resets():
    backend = Backend()
    s = EpisodeSession(backend, max_steps=100, label="operator", reset="operator", step_timeout_s=5)

    def operator():
        time.sleep(0.05)
        s.operator_continue()
        while "policy=True" not in backend.calls:
            time.sleep(0.001)
        for _ in range(3):
            s.step(False, 1)
        s.operator_stop()
        while "policy=False" not in backend.calls:
            time.sleep(0.001)
        s.operator_label(True)

    threading.Thread(target=operator, daemon=True).start()
    result = s.run_episode()
    assert result["success"] and result["steps"] == 3 and backend.calls[-1] == "commit=True"


class LostStartAnswer(Backend):
    """The recorder's state, and a first start whose answer is lost after the recorder started."""

    def __init__(self):
        super().__init__()
        self.recording, self.lose_next_answer = True, True  # a previous manager's recording, too

    def start_recording(self):
        if self.recording:
            raise RuntimeError("/recorder/start: already recording (stop or discard first)")
        self.recording = True
        self.calls.append("start")
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise RuntimeError("service /recorder/start did not answer")

    def commit(self, success):
        self.recording = False
        return super().commit(success)

    def discard(self):
        self.recording = False
        super().discard()


def steps_after_next_enable(backend, session, steps, episode):
    enabled = backend.calls.count("policy=True")

    def run():
        while backend.calls.count("policy=True") == enabled:
            time.sleep(0.001)
        for _ in range(steps):
            session.step(False, episode)
            time.sleep(0.005)
    threading.Thread(target=run, daemon=True).start()


def test_a_start_whose_answer_was_lost_does_not_block_the_session():
    backend = LostStartAnswer()
    session = EpisodeSession(backend, max_steps=3, label="sim", reset="auto", step_timeout_s=5.0)
    with pytest.raises(RuntimeError, match="did not answer"):
        session.run_episode()  # the manager retries the episode after such an error
    steps_after_next_enable(backend, session, 3, episode=2)
    result = session.run_episode()
    assert result["steps"] == 3 and backend.calls[-6:] == ["reset", "discard", "start", "policy=True",
                                                            "policy=False", "commit=False"]
    steps_after_next_enable(backend, session, 3, episode=3)
    session.run_episode()
    assert backend.calls[-5:] == ["reset", "start", "policy=True", "policy=False", "commit=False"]  # no needless discard
