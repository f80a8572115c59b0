"""Tactile wire protocol, parser robustness (incl. fuzzing), clock mapping and calibration: no ports, no ROS."""
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_rl.config import ConfigError
from robot_rl.drivers.tactile.calibration import Calibration, baseline_from_frames
from robot_rl.drivers.tactile.clock import ClockSync
from robot_rl.drivers.tactile.protocol import (
    CMD_SET_RATE, CMD_START, HEADER_SIZE, MAX_DIM, SYNC, TIME_MOD, Frame, FrameParser, crc32, decode_command,
    encode_command, encode_frame, frame_size,
)

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "hardware" / "tactile" / "firmware" / "tactile_sensor"


def random_frame(rng, seq, shape=None) -> Frame:
    rows, cols = shape or (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    values = rng.integers(0, 4096, (rows, cols)).astype(np.uint16)
    return Frame(seq % 65536, int(rng.integers(0, TIME_MOD)), values)


def enc(f: Frame) -> bytes:
    return encode_frame(f.seq, f.t_us, f.values)


def feed_chunks(parser, data: bytes, rng, max_chunk=64) -> list[Frame]:
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, max_chunk + 1))
        out += parser.feed(data[i:i + n])
        i += n
    return out


# -- encoding ----------------------------------------------------------------------------------
def test_crc_is_crc32_iso_hdlc():
    assert crc32(b"123456789") == 0xCBF43926


def test_round_trip_any_chunking():
    rng = np.random.default_rng(0)
    sent = [random_frame(rng, i) for i in range(300)] + [random_frame(rng, 300, (MAX_DIM, MAX_DIM))]
    stream = b"".join(enc(f) for f in sent)
    for max_chunk in (1, 7, 100, len(stream)):
        parser = FrameParser()
        got = feed_chunks(parser, stream, rng, max_chunk)
        assert len(got) == len(sent) and all(g.same_as(s) for g, s in zip(got, sent))
        assert parser.stats.bad_frames == parser.stats.garbage_bytes == parser.stats.frames_lost == 0
        assert parser.buffered == 0


def test_encoder_rejects_bad_grids_and_commands_round_trip():
    with pytest.raises(ValueError):
        encode_frame(0, 0, np.zeros((0, 3)))
    with pytest.raises(ValueError):
        encode_frame(0, 0, np.zeros((65, 1)))
    assert decode_command(encode_command(CMD_SET_RATE, 1000)) == (CMD_SET_RATE, 1000)
    bad = bytearray(encode_command(CMD_START))
    bad[5] ^= 0x10
    assert decode_command(bytes(bad)) is None


def test_protocol_md_example_matches_the_encoder():
    text = (ROOT / "hardware" / "tactile" / "PROTOCOL.md").read_text()
    block = re.search(r"<!-- example-frame -->\s*```\s*([0-9a-f ]+?)\s*```", text).group(1)
    example = bytes.fromhex(block)
    assert example == encode_frame(258, 0x12345678, np.array([[100, 200], [300, 4095]]))
    for name, code, arg in [("START", CMD_START, 0), ("SET_RATE 1000", CMD_SET_RATE, 1000)]:
        assert f"{name} = `{encode_command(code, arg).hex(' ')}`" in text


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_firmware_protocol_header_matches_python(tmp_path):
    """The firmware's tactile_protocol.h, compiled on the host, produces the Python encoder's bytes."""
    harness = tmp_path / "harness.c"
    harness.write_text(r'''
#include <stdio.h>
#include "tactile_protocol.h"
int main(void) {
    unsigned seq, t, rows, cols; static uint16_t v[64 * 64]; static uint8_t out[TACTILE_FRAME_SIZE(64, 64)];
    char mode[8];
    while (scanf("%7s", mode) == 1) {
        if (mode[0] == 'f') {
            if (scanf("%u %u %u %u", &seq, &t, &rows, &cols) != 4) return 2;
            for (unsigned i = 0; i < rows * cols; i++) { unsigned x; if (scanf("%u", &x) != 1) return 2; v[i] = (uint16_t)x; }
            size_t n = tactile_encode_frame(out, (uint16_t)seq, (uint32_t)t, (uint8_t)rows, (uint8_t)cols, v);
            for (size_t i = 0; i < n; i++) printf("%02x", out[i]);
            printf("\n");
        } else {
            uint8_t p[12]; uint8_t cmd; uint32_t arg;
            for (int i = 0; i < 12; i++) { unsigned x; if (scanf("%2x", &x) != 1) return 2; p[i] = (uint8_t)x; }
            if (tactile_decode_command(p, &cmd, &arg)) printf("%u %u\n", cmd, arg); else printf("invalid\n");
        }
    }
    printf("%08x\n", tactile_crc32((const uint8_t *)"123456789", 9));
    return 0;
}''')
    exe = tmp_path / "harness"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", f"-I{FIRMWARE}", str(harness), "-o", str(exe)], check=True)
    rng = np.random.default_rng(1)
    frames = [random_frame(rng, int(rng.integers(0, 65536))) for _ in range(50)]
    frames.append(random_frame(rng, 65535, (MAX_DIM, 3)))
    commands = [encode_command(CMD_START), encode_command(CMD_SET_RATE, 750), b"\xa5\x5a\x01\x10" + bytes(8)]
    lines = [f"f {f.seq} {f.t_us} {f.shape[0]} {f.shape[1]} " + " ".join(map(str, f.values.ravel())) for f in frames]
    lines += ["c " + c.hex() for c in commands]
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    results = out.stdout.split()
    assert results[:len(frames)] == [enc(f).hex() for f in frames]
    assert out.stdout.splitlines()[len(frames):] == [f"{CMD_START} 0", f"{CMD_SET_RATE} 750", "invalid", "cbf43926"]


# -- corruption --------------------------------------------------------------------------------
def test_every_single_bit_flip_is_caught_and_the_next_frame_survives():
    rng = np.random.default_rng(2)
    frame, after = random_frame(rng, 10, (4, 4)), random_frame(rng, 11, (4, 4))
    data = enc(frame)
    for bit in range(len(SYNC) * 8, len(data) * 8):  # every bit after the start marker
        corrupted = bytearray(data)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        parser = FrameParser()
        got = parser.feed(bytes(corrupted) + enc(after))
        assert len(got) == 1 and got[0].same_as(after), f"bit {bit}"
        assert parser.stats.bad_frames == 1, (bit, parser.stats)
        if bit >= HEADER_SIZE * 8:  # in the values or the CRC: exactly a CRC error
            assert parser.stats.crc_errors == 1


def test_resync_after_garbage_including_partial_markers():
    rng = np.random.default_rng(3)
    sent = [random_frame(rng, i, (3, 5)) for i in range(4)]
    junk = [b"\x00\xff\x12", SYNC[:1], SYNC[:2], SYNC + b"\x07" + bytes(8), SYNC + b"\x01" + bytes(7) + b"\x00\x05"]
    stream = b"".join(j + enc(f) for j, f in zip(junk, sent)) + junk[4] + enc(random_frame(rng, 4, (3, 5)))
    parser = FrameParser()
    got = feed_chunks(parser, stream, rng, 5)
    assert [g.seq for g in got] == [0, 1, 2, 3, 4] and all(g.same_as(s) for g, s in zip(got, sent))
    assert parser.stats.bad_header == 1 and parser.stats.bad_length == 1 and parser.stats.garbage_bytes >= 6
    assert parser.stats.frames_lost == 0


def test_truncated_frames_are_counted_and_the_next_frame_recovered():
    rng = np.random.default_rng(4)
    full = enc(random_frame(rng, 0, (4, 4)))
    nxt = random_frame(rng, 1, (4, 4))
    for cut in range(len(SYNC), len(full) - len(SYNC) + 1):
        parser = FrameParser()
        got = parser.feed(full[:cut] + enc(nxt))
        assert len(got) == 1 and got[0].same_as(nxt), cut
        assert parser.stats.truncated == 1 and parser.stats.bad_frames == 1, (cut, parser.stats)
    parser = FrameParser()
    assert parser.feed(full[:30]) == [] and parser.buffered == 30
    parser.reset()  # the port went away mid-frame
    assert parser.stats.truncated == 1 and parser.buffered == 0


def test_sequence_gaps_wrap_and_restarts():
    rng = np.random.default_rng(5)
    seqs = [65533, 65534, 65535, 0, 1, 4, 5, 9, 0, 1]  # wrap, gap of 2, gap of 3, device restart
    parser = FrameParser()
    parser.feed(b"".join(enc(random_frame(rng, s, (2, 2))) for s in seqs))
    assert (parser.stats.seq_gaps, parser.stats.frames_lost, parser.stats.seq_restarts) == (2, 5, 1)


# -- fuzzing -----------------------------------------------------------------------------------
def test_fuzz_random_bytes_never_raise_or_yield_a_frame():
    rng = np.random.default_rng(6)
    parser = FrameParser()
    noise = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    assert feed_chunks(parser, noise, rng, 512) == []
    # random bytes dense with start markers and plausible headers: every header path, still no frame
    planted = bytearray(rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    for pos in rng.integers(0, len(planted) - 12, 4000):
        planted[pos:pos + 4] = SYNC + b"\x01"
        planted[pos + 10:pos + 12] = bytes(rng.integers(0, 9, 2, dtype=np.uint8))
    assert feed_chunks(parser, bytes(planted), rng, 512) == []
    s = parser.stats
    assert s.bytes == 300_000 and s.crc_errors > 100 and s.bad_length > 100 and s.truncated > 100


def test_fuzz_frames_mixed_with_garbage_are_all_recovered_exactly():
    rng = np.random.default_rng(7)
    sent, parts = [], []
    for i in range(3000):
        f = random_frame(rng, i)
        sent.append(f)
        parts.append(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes())
        parts.append(enc(f))
    stream = b"".join(parts)
    parser = FrameParser()
    got = feed_chunks(parser, stream, rng, 300) + parser.feed(bytes(frame_size(MAX_DIM, MAX_DIM)))
    assert len(stream) > 100_000
    assert len(got) == len(sent) and all(g.same_as(s) for g, s in zip(got, sent))


def test_fuzz_corrupted_stream_yields_only_sent_frames_and_every_intact_one():
    rng = np.random.default_rng(8)
    sent, parts, intact = {}, [], []
    for i in range(3000):
        f = random_frame(rng, i)
        sent[f.seq] = f
        data = bytearray(enc(f))
        if rng.random() < 0.3:  # corrupt: flip bytes, cut short, or splice in junk
            kind = rng.integers(0, 3)
            if kind == 0:
                for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
                    data[pos] = int(rng.integers(0, 256))
            elif kind == 1:
                del data[int(rng.integers(1, len(data))):]
            else:
                pos = int(rng.integers(0, len(data)))
                data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
            if bytes(data) == enc(f):
                intact.append(f.seq)
        else:
            intact.append(f.seq)
        parts.append(bytes(data))
    parser = FrameParser()
    got = feed_chunks(parser, b"".join(parts), rng, 300) + parser.feed(bytes(frame_size(MAX_DIM, MAX_DIM)))
    assert all(g.seq in sent and g.same_as(sent[g.seq]) for g in got), "a frame that was never sent came out"
    assert set(intact) <= {g.seq for g in got}, "an intact frame was lost"
    assert parser.stats.bad_frames > 500 and parser.stats.seq_gaps > 100


# -- clock mapping -----------------------------------------------------------------------------
def synthetic_link(seconds=20.0, rate=1000.0, drift_ppm=150.0, start_us=TIME_MOD - 2_000_000, seed=9):
    """Capture times on the host clock, device µs stamps (wrapping, drifting) and receive times with
    jitter, batched reads at random times (~2 ms apart) and occasional 40 ms host stalls."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    capture = 1000.0 + np.arange(n) / rate
    device_us = (start_us + np.round((capture - capture[0]) * 1e6 * (1 + drift_ppm * 1e-6))).astype(np.int64) % TIME_MOD
    min_delay = 3e-4
    arrive = capture + min_delay + rng.exponential(5e-4, n)
    reads = capture[0] + np.cumsum(rng.exponential(2e-3, int(seconds * 1000) + 100))
    receive = reads[np.searchsorted(reads, arrive)]  # each read returns everything that has arrived
    for t in rng.uniform(capture[0], capture[-1], 5):  # host stalls
        receive = np.where((receive > t) & (receive < t + 0.04), t + 0.04, receive)
    receive = np.maximum.accumulate(receive)
    return capture, device_us, receive, min_delay


def test_clock_sync_tracks_offset_through_wrap_drift_and_jitter():
    capture, device_us, receive, min_delay = synthetic_link()
    assert device_us.min() < 1_000_000 < 4_000_000_000 < device_us.max()  # the µs counter wraps during the run
    sync = ClockSync()
    stamps = np.array([sync.stamp(int(t), float(h)) for t, h in zip(device_us, receive)])
    assert np.all(stamps <= receive + 1e-9), "a stamp after its receive time"
    error = stamps - (capture + min_delay)
    settled = error[2000:]
    assert np.percentile(np.abs(settled), 99) < 2e-4 and np.abs(settled).max() < 1e-3, \
        (np.percentile(np.abs(settled), [50, 99]), np.abs(settled).max())
    assert sync.drift_ppm == pytest.approx(-150, abs=20)  # host clock runs slower than this device
    raw_error = receive - capture
    assert np.percentile(raw_error, 99) > 5 * np.percentile(np.abs(settled), 99)  # it really did remove jitter


@pytest.mark.parametrize("seed", range(4))
def test_clock_sync_stamps_bursts_strictly_increasing_and_never_after_receipt(seed):
    """As the driver calls it: every read's frames in one batch under one receive time."""
    capture, device_us, receive, _ = synthetic_link(seconds=8.0, seed=seed)
    sync = ClockSync()
    stamps: list[float] = []
    for h in np.unique(receive):
        burst = receive == h
        stamps += sync.stamp_batch([int(t) for t in device_us[burst]], float(h))
    stamps = np.array(stamps)
    assert np.all(stamps <= receive + 1e-9), "a stamp after its receive time"
    assert np.all(np.diff(stamps) > 0), np.flatnonzero(np.diff(stamps) <= 0)[:10]


def test_clock_sync_restarts_on_device_reset_and_follows_a_clock_step():
    capture, device_us, receive, min_delay = synthetic_link(seconds=6.0, drift_ppm=0.0)
    sync = ClockSync()
    for t, h in zip(device_us[:3000], receive[:3000]):
        sync.stamp(int(t), float(h))
    resets = sync.resets
    # the device reboots: its clock restarts near zero (a backwards jump), the link continues
    stamps = [sync.stamp(int(t - device_us[3000] + 5000) % TIME_MOD, float(h))
              for t, h in zip(device_us[3000:], receive[3000:])]
    assert sync.resets == resets + 1
    assert abs(stamps[-1] - (capture[-1] + min_delay)) < 1e-3
    # the host side steps 2 s later (e.g. a suspended VM): the estimate follows within the window
    late = [sync.stamp(int(t), float(h) + 2.0) for t, h in zip(device_us[3000:] + 7, receive[3000:])]
    assert abs(late[-1] - (capture[-1] + 2.0 + min_delay)) < 1e-3


# -- calibration -------------------------------------------------------------------------------
def test_calibration_apply_save_load(tmp_path):
    rng = np.random.default_rng(10)
    baseline = rng.uniform(100, 400, (3, 4))
    scale = rng.uniform(0.001, 0.01, (3, 4))
    cal = Calibration(baseline, scale, units="N", profile="bench")
    raw = rng.integers(0, 4096, (3, 4)).astype(np.uint16)
    out = np.empty((3, 4), np.float32)
    assert cal.apply(raw, out=out) is out and out.dtype == np.float32
    np.testing.assert_allclose(out, (raw - baseline) * scale, rtol=1e-5, atol=1e-4)
    path = cal.save(tmp_path / "bench" / "left.yaml", "left")
    data = yaml.safe_load(path.read_text())
    assert data["sensor"] == "left" and (data["rows"], data["cols"]) == (3, 4) and data["units"] == "N"
    assert len(data["baseline"]) == 3 and len(data["scale"][0]) == 4
    loaded = Calibration.load(path, 3, 4)
    np.testing.assert_allclose(loaded.apply(raw), out, rtol=1e-4, atol=1e-3)
    assert loaded.source == str(path) and not loaded.is_default

    Calibration(np.zeros((2, 5))).save(tmp_path / "left.yaml", "left")
    with pytest.raises(ConfigError, match=r"left.yaml.*2x5 grid but the profile says 3x4"):
        Calibration.load(tmp_path / "left.yaml", 3, 4)
    data["baseline"][1] = [1.0, 2.0]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"bad.yaml: baseline: must be 3 rows of 4 numbers"):
        Calibration.load(tmp_path / "bad.yaml", 3, 4)
    default = Calibration.load_or_default(tmp_path / "missing.yaml", 3, 4)
    assert default.is_default and default.apply(np.full((3, 4), 4095, np.uint16)).max() == pytest.approx(1.0)


def test_baseline_from_frames_keeps_an_existing_scale():
    rng = np.random.default_rng(11)
    frames = 500 + rng.normal(0, 2, (200, 2, 3))
    force = Calibration(np.zeros((2, 3)), 0.02, units="N")
    force.source = "calibration/x/left.yaml"
    cal = baseline_from_frames(frames, force)
    np.testing.assert_allclose(cal.baseline, frames.mean(axis=0), rtol=1e-6)
    assert cal.units == "N" and np.all(cal.scale == np.float32(0.02))
    assert cal.meta["frames"] == 200 and cal.meta["noise_std"] == pytest.approx(2.0, rel=0.2)
    assert baseline_from_frames(frames).units == "adc_full_scale"
