"""The safety envelope: limits, rate limits, staleness hold, rejection, e-stop — all counted."""
import numpy as np
import pytest

from robot_rl.config import load_profile
from robot_rl.safety import SafetyEnvelope


@pytest.fixture
def env():
    p = load_profile("sim")
    e = SafetyEnvelope(p.robot, p.safety)
    e.reset(np.array([j.home for j in p.robot.joints]))
    return e, p


def run(e, q, t0, seconds, dt=0.002):
    t = t0
    out = q
    while t < t0 + seconds - 1e-12:
        t += dt
        out = e.setpoint(out, t, dt)
    return out, t


def test_no_command_holds(env):
    e, p = env
    home = np.array([j.home for j in p.robot.joints])
    out, _ = run(e, home, 0.0, 1.0)
    assert np.allclose(out, home) and e.holding


def test_position_clipped_and_counted(env):
    e, p = env
    upper = np.array([j.upper for j in p.robot.joints])
    cmd = upper + 1.0
    t, out = 0.0, e._setpoint.copy()
    for _ in range(40):  # keep the stream fresh while the setpoint travels
        assert e.command(cmd, t)
        out, t = run(e, out, t, 0.1)
    assert np.allclose(out, upper)
    assert e.counters.position_clips == 40
    assert all(v == 40 for v in e.counters.clips_per_joint.values())


def test_velocity_limit_prevents_jumps(env):
    e, p = env
    vmax = np.array([j.max_velocity for j in p.robot.joints])
    start = e._setpoint.copy()
    target = start.copy()
    target[0] += 1.0
    e.command(target, 0.0)
    out, _ = run(e, start, 0.0, 0.1)
    assert abs(out[0] - start[0]) <= vmax[0] * 0.1 + 1e-9
    assert e.counters.velocity_limited == 1


def test_stale_stream_holds_once(env):
    e, p = env
    start = e._setpoint.copy()
    target = start.copy()
    target[0] += 2.0  # a 1 s move at the waist's 2 rad/s
    e.command(target, 0.0)
    out, t = run(e, start, 0.0, 0.1)
    assert not e.holding
    out, t = run(e, out, t, 1.5)  # silence >> 3 control periods
    assert e.holding and e.counters.stale_holds == 1
    # it stopped at the timeout (0.3 s of motion) instead of finishing the move
    timeout = p.safety.command_timeout_periods / p.robot.control_rate_hz
    assert out[0] - start[0] == pytest.approx(p.robot.joints[0].max_velocity * timeout, abs=0.01)


@pytest.mark.parametrize("bad, reason", [
    (np.array([np.nan, 0, 0, 0, 0, 0.0]), "non-finite"),
    (np.zeros(3), "expected 6 joint positions"),
])
def test_bad_commands_rejected_and_hold(env, bad, reason):
    e, _ = env
    start = e._setpoint.copy()
    ok = start.copy()
    ok[0] += 0.5
    e.command(ok, 0.0)
    run(e, start, 0.0, 0.05)
    assert not e.command(bad, 0.05)
    assert e.holding and e.counters.commands_rejected == 1 and reason in e.counters.last_reject_reason
    held, _ = run(e, e._setpoint, 0.05, 0.2)
    again, _ = run(e, held, 0.25, 0.2)
    assert np.allclose(held, again)


def test_estop_holds_until_released_and_fresh_command(env):
    e, _ = env
    start = e._setpoint.copy()
    e.set_estop(True)
    target = start + 0.1
    assert not e.command(target, 0.0)
    out, _ = run(e, start, 0.0, 0.2)
    assert np.allclose(out, start) and e.counters.estops == 1
    e.set_estop(False)
    out, _ = run(e, out, 0.2, 0.2)
    assert np.allclose(out, start)  # no fresh command yet
    assert e.command(target, 0.4)
    out, _ = run(e, out, 0.4, 0.2)
    assert not np.allclose(out, start)
