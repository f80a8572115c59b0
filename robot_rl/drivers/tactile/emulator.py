"""A taxel sensor emulator speaking PROTOCOL.md on a pty, so the real `serial.Serial` path can be tested.

The driver opens `emulator.path`, a symlink to the pty's slave side, exactly as it would open
/dev/ttyACM0. Fault knobs inject what real links do: garbage bytes, flipped bits, truncated
frames, a wrong baud rate (pure noise), and an unplug/replug (the pty disappears, the path is
removed, then a new pty appears under the same path). Frames are timed by a schedule and stamped
with the scheduled time on a device clock (offset, drift, µs wrap), like firmware stamping its scan.

Run by hand: python -m robot_rl.drivers.tactile.emulator --rows 4 --cols 4 --rate 1000 --link /tmp/tactile0
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import tempfile
import threading
import time
import tty
from pathlib import Path

import numpy as np

from robot_rl.drivers.tactile.protocol import (
    CMD_SET_RATE, CMD_START, CMD_STOP, COMMAND_SIZE, HEADER_SIZE, SYNC, TIME_MOD, decode_command, encode_frame,
)


class TactileEmulator:
    def __init__(self, rows: int = 4, cols: int = 4, rate_hz: float = 1000.0, link: str | Path | None = None,
                 baseline: np.ndarray | None = None, noise: float = 0.0, seed: int = 0,
                 device_offset_us: int = TIME_MOD - 3_000_000, drift_ppm: float = 0.0,
                 max_pending: int = 256 * 1024):
        self.rows, self.cols, self.rate_hz = rows, cols, float(rate_hz)
        self._tmpdir = None if link else tempfile.mkdtemp(prefix="tactile_emu_")
        self.path = str(link) if link else os.path.join(self._tmpdir, "tactile")
        self.rng = np.random.default_rng(seed)
        if baseline is None:
            baseline = 300 + 10 * np.arange(rows)[:, None] + np.arange(cols)[None, :]
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(rows, cols)
        self.pressure = np.zeros((rows, cols))  # counts added to the baseline ("touch")
        self.noise = noise
        self.device_offset_us, self.drift = device_offset_us, drift_ppm * 1e-6
        self.max_pending = max_pending
        self.streaming = True  # firmware streams from boot; STOP/START commands toggle it
        self.wrong_baud = False  # emit noise at the frame byte rate instead of frames
        self.seq = 0  # next sequence number
        self.generated = 0  # frames generated (written or queued)
        self.dropped = 0  # frames dropped because nobody read the port
        self.commands: list[tuple[int, int]] = []
        self.injected = {"garbage_bytes": 0, "flipped": 0, "truncated": 0}
        self._todo = {"garbage": 0, "flip": 0, "truncate": 0}
        self._lock = threading.Lock()
        self._master = self._slave = -1
        self._pending = bytearray()
        self._cmd_buf = bytearray()
        self._origin = time.monotonic()
        self._next = self._origin
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "TactileEmulator":
        self.connect()
        self._thread = threading.Thread(target=self._loop, name="tactile-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.disconnect()
        if self._tmpdir:
            os.rmdir(self._tmpdir)
            self._tmpdir = None

    def __enter__(self) -> "TactileEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def connect(self, reboot: bool = True) -> None:
        """Plug in: a fresh pty appears under `path`; a USB-powered device reboots (seq and clock restart)."""
        with self._lock:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or newline translation before the driver configures the port
            fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
            tmp = f"{self.path}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.remove(tmp)
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self.path)
            self._master, self._slave = master, slave
            self._pending.clear()
            if reboot:
                self.seq = 0
                self._origin = time.monotonic()
            self._next = time.monotonic()
            self.connected = True

    def disconnect(self) -> None:
        """Unplug: the pty goes away (readers get EIO) and the path disappears."""
        with self._lock:
            self.connected = False
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1
            if os.path.lexists(self.path):
                os.remove(self.path)

    # -- fault knobs (thread-safe; applied to the next frames) ----------------------------------
    def inject_garbage(self, nbytes: int) -> None:
        with self._lock:
            self._todo["garbage"] += nbytes

    def flip_bits(self, nframes: int) -> None:
        """Each of the next `nframes` frames gets one bit flipped after its header (payload or CRC)."""
        with self._lock:
            self._todo["flip"] += nframes

    def truncate(self, nframes: int) -> None:
        """Each of the next `nframes` frames is cut short (the next frame follows right after)."""
        with self._lock:
            self._todo["truncate"] += nframes

    # -- the device loop ------------------------------------------------------------------------
    def device_time_us(self, t: float) -> int:
        return (int(round((t - self._origin) * 1e6 * (1.0 + self.drift))) + self.device_offset_us) % TIME_MOD

    def _frame(self, t: float) -> bytes:
        values = self.baseline + self.pressure
        if self.noise > 0:
            values = values + self.rng.normal(0.0, self.noise, values.shape)
        raw = np.clip(np.rint(values), 0, 4095).astype(np.uint16)
        data = bytearray(encode_frame(self.seq, self.device_time_us(t), raw))
        self.seq = (self.seq + 1) % (1 << 16)
        self.generated += 1
        todo = self._todo
        if self.wrong_baud:
            return self.rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
        if todo["garbage"]:
            garbage = self.rng.integers(0, 256, todo["garbage"], dtype=np.uint8).tobytes()
            self.injected["garbage_bytes"] += todo["garbage"]
            todo["garbage"] = 0
            data[:0] = garbage
            body = len(garbage)
        else:
            body = 0
        if todo["flip"]:
            todo["flip"] -= 1
            self.injected["flipped"] += 1
            i = body + int(self.rng.integers(HEADER_SIZE, len(data) - body))
            data[i] ^= 1 << int(self.rng.integers(0, 8))
        elif todo["truncate"]:
            todo["truncate"] -= 1
            self.injected["truncated"] += 1
            del data[body + int(self.rng.integers(len(SYNC), len(data) - body - len(SYNC) + 1)):]
        return bytes(data)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.connected:
                    self._read_commands()
                    now = time.monotonic()
                    period = 1.0 / self.rate_hz
                    if not self.streaming:
                        self._next = now
                    burst = 0
                    while self.streaming and self._next <= now and burst < 200:
                        frame = self._frame(self._next)
                        self._next += period
                        burst += 1
                        if len(self._pending) + len(frame) > self.max_pending:
                            self.dropped += 1  # like a device whose USB FIFO is full: the frame is lost
                        else:
                            self._pending += frame
                    self._flush()
                wake = self._next - time.monotonic()
            self._stop.wait(min(max(wake, 0.0003), 0.002))

    def _flush(self) -> None:
        while self._pending:
            try:
                n = os.write(self._master, self._pending)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EIO):
                    return
                raise
            del self._pending[:n]

    def _read_commands(self) -> None:
        try:
            self._cmd_buf += os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        while True:
            i = self._cmd_buf.find(SYNC)
            if i < 0:
                del self._cmd_buf[:-2]
                return
            if len(self._cmd_buf) - i < COMMAND_SIZE:
                del self._cmd_buf[:i]
                return
            decoded = decode_command(bytes(self._cmd_buf[i:i + COMMAND_SIZE]))
            if decoded is None:
                del self._cmd_buf[:i + 1]
                continue
            del self._cmd_buf[:i + COMMAND_SIZE]
            self.commands.append(decoded)
            command, arg = decoded
            if command == CMD_START:
                self.streaming = True
            elif command == CMD_STOP:
                self.streaming = False
            elif command == CMD_SET_RATE and 1 <= arg <= 5000:
                self.rate_hz = float(arg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Taxel sensor emulator on a pty (PROTOCOL.md v1).")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--noise", type=float, default=2.0, help="ADC noise std (counts)")
    parser.add_argument("--link", default="/tmp/tactile0", help="path of the symlink the driver opens")
    args = parser.parse_args(argv)
    emu = TactileEmulator(args.rows, args.cols, args.rate, link=args.link, noise=args.noise).start()
    print(f"emulating a {args.rows}x{args.cols} taxel sensor at {args.rate:g} Hz on {emu.path}; Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        print(f"sent {emu.generated} frames", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
