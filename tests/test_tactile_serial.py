"""The tactile driver's real `serial.Serial` path against the protocol emulator on a pty at 1 kHz.

Every wait is on a condition with a generous timeout; the assertions count frames and counters,
never wall-clock speed.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_rl.drivers.tactile import Calibration, SerialTactileDriver, TactileError, record_baseline
from robot_rl.drivers.tactile.emulator import TactileEmulator
from robot_rl.drivers.tactile.protocol import CMD_SET_RATE, CMD_START

pytestmark = pytest.mark.timeout(120)
ROWS, COLS, RATE = 4, 6, 1000.0
ROOT = Path(__file__).resolve().parents[1]


class Reader:
    """The driver in a thread, collecting what it delivers."""

    def __init__(self, port: str, **kwargs):
        kwargs.setdefault("no_frames_timeout_s", 1.0)
        kwargs.setdefault("retry_max_s", 0.5)
        self.driver = SerialTactileDriver(port, 2_000_000, ROWS, COLS, rate_hz=RATE, **kwargs)
        self.samples = []
        self.logs: list[str] = []
        self.driver._log = lambda level, msg: self.logs.append(msg)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.driver.run, args=(self.samples.append, self._stop.is_set), daemon=True)
        self.thread.start()

    def wait(self, predicate, timeout=20.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def seqs(self) -> set[int]:
        return {s.seq for s in list(self.samples)}

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5.0)
        assert not self.thread.is_alive()


@pytest.fixture
def emulator():
    emu = TactileEmulator(ROWS, COLS, RATE).start()
    yield emu
    emu.stop()


@pytest.fixture
def reader(emulator):
    r = Reader(emulator.path)
    yield r
    r.stop()


def test_delivers_every_frame_at_1khz(emulator, reader):
    assert reader.wait(lambda: len(reader.samples) > 0), reader.driver.last_error
    first = reader.samples[0].seq
    assert reader.wait(lambda: emulator.seq >= first + 3000, timeout=60)  # ~3 s of frames
    emulator.streaming = False
    last = emulator.seq - 1
    assert reader.wait(lambda: last in reader.seqs(), timeout=10)
    got = {s for s in reader.seqs() if first <= s <= last}
    fraction = len(got) / (last - first + 1)
    print(f"delivered {len(got)}/{last - first + 1} = {fraction:.5f}")
    assert fraction >= 0.999
    assert reader.driver.parser.stats.bad_frames == 0 and emulator.dropped == 0
    sample = reader.samples[-1]
    assert sample.raw.shape == (ROWS, COLS) and sample.raw.dtype == np.uint16
    np.testing.assert_array_equal(sample.raw, emulator.baseline)
    stamps = np.array([s.stamp for s in reader.samples])
    received = np.array([s.received for s in reader.samples])
    assert np.all(stamps <= received) and np.all(np.diff(stamps) > 0)
    assert (CMD_SET_RATE, int(RATE)) in emulator.commands and (CMD_START, 0) in emulator.commands
    d = reader.driver.diagnostics()
    assert d["port_state"] == "streaming" or d["port_state"] == "no_frames"  # streaming stopped above
    assert d["frames"] == len(reader.samples) and d["crc_errors"] == 0


class PreemptedClock:
    """`time` as the driver sees it, on a busy host: one wall-clock read in 20 is cut off from the
    monotonic read next to it by a 3 ms pause, as when the scheduler runs another thread between the
    two (on demand only by forcing it; the port, emulator and driver are real)."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.pauses = 0

    def time(self) -> float:
        if self.rng.random() < 0.05:
            self.pauses += 1
            time.sleep(0.003)
        return time.time()

    def __getattr__(self, name):
        return getattr(time, name)


def test_stamps_stay_in_order_when_clock_reads_are_preempted(emulator, monkeypatch):
    from robot_rl.drivers.tactile import serial_driver

    clock = PreemptedClock()
    monkeypatch.setattr(serial_driver, "time", clock)
    reader = Reader(emulator.path)
    try:
        assert reader.wait(lambda: len(reader.samples) >= 1500), reader.driver.last_error
    finally:
        reader.stop()
    stamps = np.array([s.stamp for s in reader.samples])
    assert clock.pauses > 10
    assert np.all(np.diff(stamps) > 0), f"{np.sum(np.diff(stamps) <= 0)} stamps out of order"


def test_garbage_flipped_bits_and_truncated_frames_are_survived_and_counted(emulator, reader):
    assert reader.wait(lambda: len(reader.samples) > 100), reader.driver.last_error
    for _ in range(5):
        emulator.inject_garbage(300)
        time.sleep(0.02)  # spread the faults over the stream (not a timing assertion)
    emulator.flip_bits(20)
    assert reader.wait(lambda: emulator.injected["flipped"] == 20)
    emulator.truncate(20)
    assert reader.wait(lambda: emulator.injected["truncated"] == 20)
    mark = emulator.seq + 100
    assert reader.wait(lambda: max(reader.seqs()) >= mark)
    s = reader.driver.parser.stats
    assert s.crc_errors == 20 and s.truncated == 20 and s.bad_length == s.bad_header == 0, s
    assert s.frames_lost == 40 and s.garbage_bytes >= 1500, s
    assert all(np.array_equal(x.raw, emulator.baseline) for x in reader.samples)  # no corrupted frame got through
    d = reader.driver.diagnostics()
    assert d["bad_frames"] == 40 and d["seq_gaps"] >= 1 and d["port_state"] == "streaming"


def test_wrong_baud_and_silent_device_give_clear_errors_and_recover(emulator, reader):
    assert reader.wait(lambda: len(reader.samples) > 10)
    emulator.wrong_baud = True  # bytes keep coming, none of them frames
    assert reader.wait(lambda: reader.driver.state == "no_frames")
    msg = reader.driver.last_error
    assert f"no valid frames from {emulator.path} at 2000000 baud" in msg and "check the baud rate" in msg, msg
    assert "sensor firmware is running" in msg
    assert sum("no valid frames" in line for line in reader.logs) == 1  # logged once, not per timeout
    emulator.wrong_baud = False
    n = len(reader.samples)
    assert reader.wait(lambda: len(reader.samples) > n + 50 and reader.driver.state == "streaming")
    # a device told to stop (or hung): "no data", and the driver's repeated START revives it
    emulator.streaming = False
    assert reader.wait(lambda: any(f"no data from {emulator.path}" in line for line in reader.logs))
    assert reader.wait(lambda: emulator.streaming and reader.driver.state == "streaming")
    assert emulator.commands.count((CMD_START, 0)) >= 3  # on open, after the wrong baud, after the silence


def test_a_sensor_of_another_shape_is_named_in_the_error():
    with TactileEmulator(3, 3, RATE) as emu:
        r = Reader(emu.path)
        try:
            assert r.wait(lambda: r.driver.state == "no_frames")
            assert r.driver.last_error.startswith(f"{emu.path} sends 3x3 taxel frames but the profile says {ROWS}x{COLS}")
            assert r.samples == [] and r.driver.shape_mismatch > 100
        finally:
            r.stop()


def test_unplugged_port_is_reopened_when_it_comes_back(emulator, reader):
    assert reader.wait(lambda: len(reader.samples) > 100)
    emulator.disconnect()
    assert reader.wait(lambda: reader.driver.state == "missing"), reader.driver.state
    assert any("lost tactile port" in line for line in reader.logs)
    assert "does not exist" in reader.driver.last_error
    time.sleep(0.3)  # let a few retries fail (the count is not asserted)
    n = len(reader.samples)
    emulator.connect()  # replugged: the device rebooted, seq restarts at 0
    assert reader.wait(lambda: len(reader.samples) > n + 200), reader.driver.last_error
    assert reader.driver.reconnects == 1 and reader.driver.state == "streaming"
    assert reader.samples[-1].seq < 5000 and reader.driver.parser.stats.seq_restarts == 0
    assert np.all(np.diff([s.stamp for s in reader.samples[n:]]) > 0)


def test_missing_port_gives_a_clear_error_and_keeps_retrying(tmp_path):
    path = tmp_path / "ttyTACTILE"
    r = Reader(str(path))
    try:
        assert r.wait(lambda: r.driver.state == "missing")
        msg = r.driver.last_error
        assert f"tactile port {path} does not exist" in msg and "check the USB cable" in msg, msg
        assert len(r.logs) == 1  # logged once, not once per retry
        with TactileEmulator(ROWS, COLS, RATE, link=path):  # the sensor is plugged in later
            assert r.wait(lambda: len(r.samples) > 100), r.driver.last_error
            assert r.driver.state == "streaming" and r.driver.last_error == ""
    finally:
        r.stop()


def test_record_baseline_and_calibrate_command(tmp_path):
    with TactileEmulator(ROWS, COLS, RATE, noise=2.0, seed=3) as emu:
        cal = record_baseline(emu.path, 2_000_000, ROWS, COLS, seconds=0.5)
        assert cal.shape == (ROWS, COLS) and cal.meta["frames"] > 200
        np.testing.assert_allclose(cal.baseline, emu.baseline, atol=1.0)
        assert cal.meta["noise_std"] == pytest.approx(2.0, rel=0.3)

        profile = tmp_path / "bench.yaml"
        write_profile(profile, emu.path)
        env = dict(os.environ, ROBOT_RL_CALIBRATION_DIR=str(tmp_path / "cal"))
        cmd = [sys.executable, "-m", "robot_rl.drivers.tactile.calibrate", "--profile", str(profile),
               "--sensor", "left", "--seconds", "0.5"]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        written = tmp_path / "cal" / "tactile_bench" / "left.yaml"
        assert f"wrote {written}" in result.stdout
        loaded = Calibration.load(written, ROWS, COLS)
        np.testing.assert_allclose(loaded.baseline, emu.baseline, atol=1.0)
        assert yaml.safe_load(written.read_text())["profile"] == "tactile_bench"

    missing = subprocess.run(cmd[:-2] + ["--seconds", "0.5", "--timeout", "2"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and f"tactile port {emu.path} does not exist" in missing.stderr, missing.stderr
    with pytest.raises(TactileError, match="does not exist"):
        record_baseline(emu.path, 2_000_000, ROWS, COLS, seconds=0.2, timeout_s=1.0)


def write_profile(path: Path, port: str, name: str = "tactile_bench") -> None:
    """A profile with one tactile sensor on `port` (robot section as in sim.yaml)."""
    data = yaml.safe_load((ROOT / "hardware" / "profiles" / "sim.yaml").read_text())
    data.update(name=name, cameras=[], nodes=[{"name": "tactile_left", "executable": "tactile_node",
                                               "params": {"sensor": "left"}}])
    data["tactile"] = [{"name": "left", "rows": ROWS, "cols": COLS, "rate_hz": RATE, "port": port, "baud": 2_000_000}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
