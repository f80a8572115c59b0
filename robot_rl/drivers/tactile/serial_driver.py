"""The serial taxel driver: real `serial.Serial` reads -> parser -> clock mapping -> one callback per frame.

It owns the port's whole life: opening with clear errors (missing device, permissions, busy port),
telling "no data" from "data but no valid frames" (wrong baud, wrong firmware), and reopening with
back-off when the port disappears (USB unplug) until it comes back. No ROS here; the node passes a
callback and a stop predicate and reads `diagnostics()`.
"""
from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import serial

from robot_rl.drivers.tactile.clock import ClockSync
from robot_rl.drivers.tactile.protocol import CMD_SET_RATE, CMD_START, FrameParser, encode_command

log = logging.getLogger(__name__)
WALL_STEP_S = 1e-3  # a wall-clock change against the monotonic clock this large is a step to follow


def wall_minus_monotonic(tries: int = 5) -> float:
    """The wall clock's offset from the monotonic one, read between two monotonic reads that lie
    close together (a read the scheduler cut in two would be off by the pause)."""
    for _ in range(tries):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if after - before < 1e-4:
            break
    return wall - 0.5 * (before + after)


class TactileError(RuntimeError):
    """The sensor cannot be used; the message names the port and what to check."""


@dataclass
class TactileSample:
    seq: int
    t_us: int  # device clock (wrapping µs)
    stamp: float  # capture time on the host wall clock (s), from the clock mapping
    received: float  # host wall clock when the bytes were read (s)
    raw: np.ndarray  # (rows, cols) uint16 raw ADC counts


def open_error(port: str, exc: Exception, retry_s: float) -> str:
    """What went wrong opening `port`, and what to check."""
    code = getattr(exc, "errno", None)
    retry = f"; retrying in {retry_s:.1f} s"
    if code == errno.ENOENT:
        return (f"tactile port {port} does not exist; check the USB cable and power, that the sensor enumerates "
                f"(dmesg, ls /dev/ttyACM* /dev/ttyUSB*), the udev rule and the profile's tactile port{retry}")
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied opening {port}; add your user to the 'dialout' group and log in again{retry}"
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return f"{port} is in use by another process (check: fuser {port}){retry}"
    return f"cannot open tactile port {port}: {exc}{retry}"


class SerialTactileDriver:
    def __init__(self, port: str, baud: int, rows: int, cols: int, rate_hz: float | None = None,
                 retry_max_s: float = 5.0, no_frames_timeout_s: float = 2.0,
                 on_log: Callable[[int, str], None] | None = None):
        self.port, self.baud, self.shape = port, int(baud), (int(rows), int(cols))
        self.rate_hz = rate_hz
        self.retry_max_s, self.no_frames_timeout_s = retry_max_s, no_frames_timeout_s
        self._log = on_log or (lambda level, msg: log.log(level, msg))
        self.parser = FrameParser()
        self.clock = ClockSync()
        self.state = "closed"  # closed | missing | open | streaming | no_frames | lost
        self.last_error = ""
        self._error_key = ""
        self.opens = 0
        self.reconnects = 0  # successful reopenings after the first
        self.delivered = 0
        self.shape_mismatch = 0
        self.latency_ms = 0.0  # running mean of receive - capture stamp
        self._mismatch: tuple[int, int] | None = None
        self._rate = (time.monotonic(), 0)
        self._rate_hz = 0.0

    # -- state and messages ---------------------------------------------------------------------
    def _set(self, state: str, error: str = "", level: int = logging.WARNING, key: str = "") -> None:
        """Log a problem once when it appears (not on every retry: same `key`), and recovery once."""
        key = key or error.split("; retrying")[0]
        if error and key != self._error_key:
            self._log(level, error)
        elif not error and self.last_error and state == "streaming":
            self._log(logging.INFO, f"receiving frames from {self.port} again")
        self.state, self.last_error, self._error_key = state, error, key if error else ""

    # -- the loop -------------------------------------------------------------------------------
    def run(self, on_sample: Callable[[TactileSample], None], should_stop: Callable[[], bool]) -> None:
        """Open, stream, reopen on loss, until `should_stop()`. Never returns on device errors."""
        backoff = 0.1
        while not should_stop():
            try:
                port = serial.Serial(self.port, self.baud, timeout=0.05, write_timeout=0.2, exclusive=True)
            except (OSError, ValueError) as e:  # SerialException is an OSError; ValueError: bad settings
                self._set("missing", open_error(self.port, e, backoff), logging.ERROR)
                end = time.monotonic() + backoff
                while not should_stop() and time.monotonic() < end:
                    time.sleep(0.02)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            backoff = 0.1
            try:
                self._opened(port)
                self._stream(port, on_sample, should_stop)
            except OSError as e:  # unplugged, EIO, "device reports readiness to read but returned no data"
                self._set("lost", f"lost tactile port {self.port} ({e}); reopening", logging.ERROR)
            finally:
                try:
                    port.close()
                except OSError:
                    pass
                self.parser.reset()
                self.clock.reset()
        self.state = "closed"

    def _opened(self, port: serial.Serial) -> None:
        self.opens += 1
        self.reconnects += self.opens > 1
        if self.last_error:
            self._log(logging.INFO, f"opened tactile port {self.port}")
        self._set("open", "")
        self._send_start(port)

    def _send_start(self, port: serial.Serial) -> None:
        try:
            if self.rate_hz:
                port.write(encode_command(CMD_SET_RATE, int(round(self.rate_hz))))
            port.write(encode_command(CMD_START))
        except serial.SerialTimeoutException:
            pass  # a device that does not read commands still streams from power-up

    def _stream(self, port: serial.Serial, on_sample: Callable[[TactileSample], None],
                should_stop: Callable[[], bool]) -> None:
        parser, clock, shape = self.parser, self.clock, self.shape
        last_valid = time.monotonic()
        bytes_at_valid = parser.stats.bytes
        # Stamps are estimated on the monotonic clock and published on the wall clock. One offset per
        # stream, following only a real step of the wall clock: re-reading it for every read let a
        # thread preempted between the two clock reads shift one read's stamps by milliseconds, out
        # of order with the next read's.
        wall_offset = wall_minus_monotonic()
        while not should_stop():
            data = port.read(port.in_waiting or 1)
            now = time.monotonic()
            offset = wall_minus_monotonic()
            if abs(offset - wall_offset) > WALL_STEP_S:
                wall_offset = offset
            if data:
                frames = parser.feed(data)
                if frames:
                    received = now + wall_offset
                    good = [f for f in frames if f.shape == shape]
                    if len(good) < len(frames):
                        self.shape_mismatch += len(frames) - len(good)
                        self._mismatch = next(f.shape for f in frames if f.shape != shape)
                    stamps = clock.stamp_batch([f.t_us for f in good], now)
                    for frame, stamp in zip(good, stamps):
                        stamp += wall_offset
                        self.latency_ms += 0.01 * ((received - stamp) * 1e3 - self.latency_ms)
                        self.delivered += 1
                        on_sample(TactileSample(frame.seq, frame.t_us, stamp, received, frame.values))
                    if good:
                        last_valid, bytes_at_valid = now, parser.stats.bytes
                        if self.state != "streaming":
                            self._set("streaming", "")
            if now - last_valid > self.no_frames_timeout_s:
                nbytes = parser.stats.bytes - bytes_at_valid
                self._set("no_frames", self._no_frames_message(now - last_valid, nbytes), logging.ERROR,
                          key=f"no_frames:{nbytes > 0}:{self._mismatch}")
                self._send_start(port)  # maybe it was told to stop; ask again once per timeout
                last_valid, bytes_at_valid = now, parser.stats.bytes

    def _no_frames_message(self, waited: float, nbytes: int) -> str:
        rows, cols = self.shape
        if self._mismatch is not None:
            r, c = self._mismatch
            return (f"{self.port} sends {r}x{c} taxel frames but the profile says {rows}x{cols}; "
                    "fix the profile's tactile rows/cols (or flash matching firmware)")
        s = self.parser.stats
        if nbytes == 0:
            return (f"no data from {self.port} at {self.baud} baud for {waited:.1f} s; check that the sensor "
                    "firmware is running (reset the board) and that this is the sensor's port")
        return (f"no valid frames from {self.port} at {self.baud} baud for {waited:.1f} s ({nbytes} bytes received, "
                f"{s.crc_errors} CRC errors, {s.bad_header + s.bad_length} bad headers); check the baud rate "
                "and that the sensor firmware is running (protocol v1, hardware/tactile/PROTOCOL.md)")

    # -- diagnostics ----------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, object]:
        """Counters for /diagnostics; `rate_hz` is measured since the previous call."""
        now = time.monotonic()
        t0, n0 = self._rate
        if now - t0 >= 0.5:
            self._rate_hz = (self.delivered - n0) / (now - t0)
            self._rate = (now, self.delivered)
        values: dict[str, object] = self.parser.stats.as_dict()
        values["parsed_frames"] = values.pop("frames")
        values.update({
            "port": self.port, "baud": self.baud, "port_state": self.state, "rate_hz": round(self._rate_hz, 1),
            "frames": self.delivered, "reconnects": self.reconnects, "shape_mismatch": self.shape_mismatch,
            "clock_offset_s": round(self.clock.offset + time.time() - now, 6) if self.clock.samples else "",
            "clock_drift_ppm": round(self.clock.drift_ppm, 1), "clock_resets": self.clock.resets,
            "latency_ms": round(self.latency_ms, 3), "last_error": self.last_error,
        })
        return values
