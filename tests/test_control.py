"""Chunk execution: latency compensation, exhaustion, lead time, temporal ensembling; obs history;
the lockstep episode-start gate."""
import numpy as np
import pytest

from robot_rl.control.chunking import ChunkExecutor, ObservationHistory
from robot_rl.control.lockstep import EpisodeStartGate, RepeatedTaskStates, StepBudget

DT = 0.1


def chunk(value: float, n: int = 16) -> np.ndarray:
    """Actions whose first entry encodes (value, step index)."""
    return np.stack([[value + i, 0.0] for i in range(n)])


def test_actions_follow_the_chunk_in_time():
    ex = ChunkExecutor(DT, exec_horizon=8)
    ex.add(t_obs=1.0, actions=chunk(100), now=1.0)
    for k in range(8):
        action, phase = ex.action_at(1.0 + k * DT)
        assert action[0] == 100 + k and phase == k
    assert ex.action_at(1.0 + 8 * DT) is None  # executes only exec_horizon actions
    assert ex.action_at(0.9) is None  # nothing before the observation it was predicted from


def test_chunk_features_follow_the_newest_chunk():
    ex = ChunkExecutor(DT, exec_horizon=8)
    assert ex.features() is None
    ex.add(0.0, chunk(0), now=0.0, features=np.array([1.0]))
    ex.add(0.8, chunk(0), now=0.8, features=np.array([2.0]))
    assert ex.features()[0] == 2.0 and ex.action_at(0.8)[1] == 0


def test_late_chunk_skips_actions_whose_time_has_passed():
    ex = ChunkExecutor(DT, exec_horizon=8)
    ex.add(t_obs=1.0, actions=chunk(0), now=1.0 + 2.6 * DT)  # inference took 2.6 periods
    assert ex.late_chunks == 1 and ex.skipped == 3
    action, phase = ex.action_at(1.0 + 3 * DT)
    assert action[0] == 3 and phase == 3


def test_needs_chunk_before_the_current_runs_out():
    ex = ChunkExecutor(DT, exec_horizon=8)
    assert ex.needs_chunk(0.0, lead_steps=2)
    ex.add(0.0, chunk(0), now=0.0)
    assert not ex.needs_chunk(5 * DT, lead_steps=2)
    assert ex.needs_chunk(6 * DT, lead_steps=2)


def test_temporal_ensembling_averages_overlapping_predictions():
    ex = ChunkExecutor(DT, exec_horizon=8, ensemble_k=0.5)
    ex.add(0.0, chunk(0), now=0.0)
    ex.add(2 * DT, chunk(10), now=2 * DT)  # predicts 10 for t = 0.2, where the first predicted 2
    action, phase = ex.action_at(2 * DT)
    w = np.exp(-0.5 * np.arange(1, 3))
    assert action[0] == pytest.approx((w[0] * 2 + w[1] * 10) / w.sum()) and phase == 0


def test_reset_forgets_chunks():
    ex = ChunkExecutor(DT, exec_horizon=8)
    ex.add(0.0, chunk(0), now=0.0)
    ex.reset()
    assert ex.action_at(0.0) is None


def test_history_pads_with_the_first_observation():
    h = ObservationHistory(3)
    h.push({"x": np.array([1.0])})
    assert h.window()["x"].ravel().tolist() == [1.0, 1.0, 1.0]
    h.push({"x": np.array([2.0])})
    h.push({"x": np.array([3.0])})
    h.push({"x": np.array([4.0])})
    assert h.window()["x"].ravel().tolist() == [2.0, 3.0, 4.0]


def test_an_enable_waits_for_the_first_observation_of_a_new_sim_episode():
    gate = EpisodeStartGate(enabled_at_start=False)
    gate.episode_seen(0, 1.0)  # the sim's start-up state
    gate.enabled()
    assert not gate.allows(1.0)  # sessions reset first: the start-up state is no episode start
    assert "episode 0" in gate.waiting_for()
    gate.episode_seen(1, 1.1)  # reset
    assert not gate.allows(1.0) and gate.allows(1.1)
    gate.acting()
    gate.episode_seen(1, 1.2)  # later task states of the same episode do not move its start
    assert gate.allows(1.2) and gate.allows(1.3)
    # the episode ends with an observation (1.4) the policy never acts on; the next enable comes
    # before the reset's task state: the stale observation must not be acted on
    gate.enabled()
    assert not gate.allows(1.4) and not gate.allows(1.5)
    gate.episode_seen(2, 1.5)
    assert not gate.allows(1.4) and gate.allows(1.5)


def test_a_policy_enabled_from_the_start_acts_at_once_and_later_enables_wait():
    gate = EpisodeStartGate(enabled_at_start=True)
    assert gate.allows(0.0)  # no task state yet
    gate.episode_seen(0, 0.0)
    gate.acting()
    gate.enabled()
    assert not gate.allows(0.3)
    gate.episode_seen(1, 0.4)
    assert gate.allows(0.4)


def test_a_step_budget_refuses_commands_past_it_until_the_reset():
    budget = StepBudget(3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False] and budget.refused == 2
    budget.reset()
    assert budget.take() and budget.refused == 2
    unlimited = StepBudget(0)
    assert all(unlimited.take() for _ in range(1000)) and unlimited.refused == 0
    with pytest.raises(ValueError, match="episode_steps"):
        StepBudget(-1)


def test_a_re_sent_task_state_is_one_step():
    states = RepeatedTaskStates()
    assert states.is_new({"episode": 1, "stamp": 1.0})
    assert not states.is_new({"episode": 1, "stamp": 1.0})  # the lockstep sim's re-send
    assert states.is_new({"episode": 1, "stamp": 1.1})
    assert states.is_new({"episode": 2, "stamp": 1.1})  # a reset at the same sim time is a new step
    assert states.is_new({"success": False}) and states.is_new({"success": False})  # no stamp: always counted
