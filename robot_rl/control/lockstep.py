"""Which observations a policy enabled on a lockstep sim may act on.

A lockstep sim steps once per command, so the last observation of an episode is never acted on: the
episode ends (and the policy is disabled) on the task state that came with it. When the policy is
enabled for the next episode, that observation can still be the newest complete one, because the
reset's images are still in flight. Acting on it would step the freshly reset sim with a command
computed in the previous episode and record that step as the new episode's first. So an enable waits
for the first observation of a sim episode that no earlier enable acted in; the sim's task state
gives each episode's number and first stamp.
"""
from __future__ import annotations

STAMP_TOLERANCE_S = 1e-4  # stamps cross JSON (float) and builtin_interfaces/Time (ns)


class EpisodeStartGate:
    def __init__(self, enabled_at_start: bool):
        self.start: tuple[int, float] | None = None  # the sim's newest episode: (number, first stamp)
        # the sim's start-up state (episode 0) is no episode start for an enable: every lockstep flow
        # (sessions, evaluation, tests) resets first; a policy enabled from the start acts in it
        self.acted: int | None = None if enabled_at_start else 0
        self.armed = not enabled_at_start  # an enable is waiting for a new episode

    def episode_seen(self, number: int, stamp: float) -> None:
        """A sim task state: the first one of each episode number marks where the episode starts."""
        if self.start is None or number != self.start[0]:
            self.start = (number, stamp)

    def enabled(self) -> None:
        self.armed = True

    def allows(self, t: float) -> bool:
        """May an observation stamped `t` be acted on?"""
        if not self.armed:
            return True
        return self.start is not None and self.start[0] != self.acted and t >= self.start[1] - STAMP_TOLERANCE_S

    def acting(self) -> None:
        """The policy acts on an observation the gate allows."""
        if self.start is not None:
            self.acted = self.start[0]
        self.armed = False

    def waiting_for(self) -> str:
        """What an armed gate waits for, for the log."""
        if self.start is None:
            return "no sim task state yet (is the sim robot up?)"
        if self.start[0] == self.acted:
            return f"a sim reset (episode {self.start[0]} was already acted in)"
        return f"the first observation of sim episode {self.start[0]}"


class RepeatedTaskStates:
    """A lockstep sim re-sends its last task state while no command comes (for readers that missed
    it); whoever counts control steps by task states must count that step once."""

    def __init__(self):
        self.last: tuple | None = None

    def is_new(self, state: dict) -> bool:
        key = (state.get("episode"), state.get("stamp"))
        if key[1] is not None and key == self.last:
            return False
        self.last = key
        return True


class StepBudget:
    """A lockstep sim's control steps per episode (0 = no limit). Past the budget a command is refused
    until the next reset: a policy command already in flight when the episode manager times out (or an
    evaluation stops counting) would otherwise step the sim once more and be recorded past `max_steps`."""

    def __init__(self, limit: int):
        if limit < 0:
            raise ValueError(f"episode_steps must be >= 0, got {limit}")
        self.limit, self.taken, self.refused = int(limit), 0, 0

    def reset(self) -> None:
        self.taken = 0

    def take(self) -> bool:
        """May the sim step for this command? Counts it either way."""
        if self.limit and self.taken >= self.limit:
            self.refused += 1
            return False
        self.taken += 1
        return True
