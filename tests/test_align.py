"""The as-of join: no future leakage, no silent staleness, thread safety, online == offline."""
from __future__ import annotations

import heapq
import threading

import numpy as np
import pytest

from robot_rl.data.align import AsOfAligner, asof_indices

# stream -> (rate Hz, latency s, latency jitter s, max_age s, stops at t)
STREAMS = {
    "camera_front": (30.0, 0.035, 0.010, 0.100, None),
    "joint_states": (500.0, 0.001, 0.0004, 0.010, None),
    "tactile_left": (100.0, 0.005, 0.002, 0.050, 2.0),
}
CONTROL_HZ, DURATION = 30.0, 3.0


def simulate(processing_delay: float, seed: int = 0):
    """Sensor samples arrive after their capture stamps (latency + jitter); control ticks at t are
    processed `processing_delay` later, when samples stamped after t are already buffered."""
    rng = np.random.default_rng(seed)
    events = []  # (arrival time, order, kind, payload)
    samples = {}
    for name, (rate, latency, jitter, _, stop) in STREAMS.items():
        stamps = np.arange(0.0, stop if stop is not None else DURATION, 1.0 / rate) + rng.uniform(0, 1e-4)
        samples[name] = stamps
        for s in stamps:
            events.append((s + latency + rng.uniform(-jitter, jitter), len(events), "sample", (name, float(s))))
    ticks = np.arange(0.2, DURATION, 1.0 / CONTROL_HZ)
    for t in ticks:
        events.append((t + processing_delay, len(events), "tick", float(t)))
    heapq.heapify(events)
    return [heapq.heappop(events) for _ in range(len(events))], samples, ticks


def reference(arrived: dict[str, list[float]], t: float):
    """Brute force: latest arrived stamp <= t per stream, and whether it is fresh enough."""
    out = {}
    for name, stamps in arrived.items():
        past = [s for s in stamps if s <= t]
        latest = max(past) if past else None
        fresh = latest is not None and t - latest <= STREAMS[name][3]
        out[name] = (latest, fresh)
    return out


@pytest.mark.parametrize("processing_delay", [0.0, 0.004, 0.05])
def test_no_future_leakage_and_staleness_detected(processing_delay):
    aligner = AsOfAligner({name: spec[3] for name, spec in STREAMS.items()})
    events, _, _ = simulate(processing_delay)
    arrived = {name: [] for name in STREAMS}
    future_buffered = invalid_after_stop = valid_before_stop = 0
    for _, _, kind, payload in events:
        if kind == "sample":
            name, stamp = payload
            assert aligner.add(name, stamp, (name, stamp))
            arrived[name].append(stamp)
            continue
        t = payload
        obs = aligner.observe(t)
        ref = reference(arrived, t)
        future_buffered += any(s > t for stamps in arrived.values() for s in stamps[-3:])
        for name, (latest, fresh) in ref.items():
            if fresh:
                assert obs.stamps[name] == latest and obs.values[name] == (name, latest)
                assert obs.stamps[name] <= t  # never a sample from the future
            else:
                assert name in obs.problems and name not in obs.values
        assert obs.valid == all(fresh for _, fresh in ref.values())
        if t > 2.0 + STREAMS["tactile_left"][3]:
            assert not obs.valid and "stale" in obs.problems["tactile_left"]
            assert "tactile_left" in obs.reason
            invalid_after_stop += 1
        elif t < 1.9:
            valid_before_stop += obs.valid
    assert invalid_after_stop > 20 and valid_before_stop > 40
    if processing_delay >= 0.004:
        assert future_buffered > 20  # the leakage test had future samples available to leak


def test_online_and_offline_join_agree():
    events, samples, ticks = simulate(processing_delay=0.2, seed=3)
    aligner = AsOfAligner({name: spec[3] for name, spec in STREAMS.items()}, capacity=256)
    online = []
    for _, _, kind, payload in events:
        if kind == "sample":
            aligner.add(payload[0], payload[1], None)
        else:
            obs = aligner.observe(payload)
            online.append({name: obs.stamps.get(name) for name in STREAMS})
    for name, stamps in samples.items():
        idx, valid = asof_indices(stamps, ticks, STREAMS[name][3])
        offline = [float(stamps[i]) if ok else None for i, ok in zip(idx, valid)]
        assert offline == [o[name] for o in online], name


def test_boundaries():
    aligner = AsOfAligner({"a": 0.25})
    assert aligner.observe(1.0).problems == {"a": "no sample received yet"}
    aligner.add("a", 1.0, "x")
    assert aligner.observe(1.0).values == {"a": "x"}  # stamp == t is the past
    assert aligner.observe(1.25).valid  # age == max_age is still fresh
    assert "stale" in aligner.observe(1.2500001).problems["a"]
    assert "no sample at or before t" in aligner.observe(0.999).problems["a"]
    assert aligner.stats()["a"] == {"received": 1, "out_of_order": 0, "stale": 1, "missing": 2}


def test_out_of_order_samples_are_dropped_and_counted():
    aligner = AsOfAligner({"a": 1.0})
    assert aligner.add("a", 2.0, "new")
    assert not aligner.add("a", 1.5, "late")
    assert aligner.observe(1.7).problems["a"].startswith("no sample at or before t")
    assert aligner.observe(2.5).values["a"] == "new"
    assert aligner.stats()["a"]["out_of_order"] == 1


def test_ring_keeps_the_newest_samples():
    aligner = AsOfAligner({"a": 10.0}, capacity=4)
    for i in range(10):
        aligner.add("a", float(i), i)
    assert aligner.observe(7.5).values["a"] == 7
    assert aligner.observe(6.0).values["a"] == 6
    assert "oldest buffered is 0.500 s later" in aligner.observe(5.5).problems["a"]
    assert aligner.latest_stamp("a") == 9.0
    aligner.clear()
    assert aligner.latest_stamp("a") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        AsOfAligner({"a": 0.0})
    with pytest.raises(ValueError):
        AsOfAligner({})
    aligner = AsOfAligner({"a": 1.0})
    with pytest.raises(KeyError, match="unknown stream 'b'"):
        aligner.add("b", 0.0, None)
    with pytest.raises(ValueError, match="finite"):
        aligner.add("a", float("nan"), None)


def test_concurrent_producers_and_a_control_tick():
    """Callbacks add from three threads while a tick thread observes: every observed (stamp, value)
    pair belongs together and is never newer than t."""
    streams = ["cam", "joints", "tactile"]
    aligner = AsOfAligner({s: 1e9 for s in streams}, capacity=16)
    n = 50000
    errors = []

    def produce(name, step):
        for i in range(1, n + 1):
            stamp = i * step
            aligner.add(name, stamp, (name, stamp))

    checked = [0]

    def tick():
        rng = np.random.default_rng(0)
        for i in range(20000):
            latest = aligner.latest_stamp(streams[i % 3])
            t = (latest or 0.0) + float(rng.uniform(-6.0, 2.0))
            obs = aligner.observe(t)
            for name, stamp in obs.stamps.items():
                checked[0] += 1
                if stamp > t or obs.values[name] != (name, stamp):
                    errors.append((name, stamp, t, obs.values[name]))

    threads = [threading.Thread(target=produce, args=(s, k + 1.0)) for k, s in enumerate(streams)]
    threads.append(threading.Thread(target=tick))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert checked[0] > 10000
    assert {s: v["received"] for s, v in aligner.stats().items()} == {s: n for s in streams}
