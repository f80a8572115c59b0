"""Tactile wire protocol v1 (hardware/tactile/PROTOCOL.md): frame/command encoding and a streaming parser.

The parser is the only thing between raw serial bytes and the rest of the stack, so it must
survive anything: it resynchronises on the start marker, checks the CRC before believing a frame,
and classifies every rejected candidate (CRC error, truncated, bad length, bad header) so the
node can say what is wrong with the link. It never raises on input bytes.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"\xA5\x5A"
VERSION = 1
SYNC = MAGIC + bytes([VERSION])  # what the parser searches for
TYPE_FRAME = 0x01  # device -> host taxel frame
# host -> device commands (12-byte packets, same marker and CRC)
CMD_START, CMD_STOP, CMD_SET_RATE = 0x10, 0x11, 0x12

HEADER = struct.Struct("<2sBBHIBB")  # magic, version, type, seq, t_us, rows, cols
HEADER_SIZE = HEADER.size  # 12
CRC_SIZE = 4
COMMAND = struct.Struct("<2sBBI")  # magic, version, type, arg
COMMAND_SIZE = COMMAND.size + CRC_SIZE  # 12
MAX_DIM = 64  # rows and cols are each 1..64
SEQ_MOD = 1 << 16
TIME_MOD = 1 << 32


def crc32(data) -> int:
    """CRC-32/ISO-HDLC (the zlib/Ethernet CRC): check value crc32(b"123456789") == 0xCBF43926."""
    return zlib.crc32(data) & 0xFFFFFFFF


def frame_size(rows: int, cols: int) -> int:
    return HEADER_SIZE + 2 * rows * cols + CRC_SIZE


def encode_frame(seq: int, t_us: int, values: np.ndarray) -> bytes:
    """One frame; `values` is (rows, cols) of raw ADC counts (uint16, row-major on the wire)."""
    values = np.asarray(values)
    rows, cols = values.shape
    if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
        raise ValueError(f"taxel grid {rows}x{cols} outside 1..{MAX_DIM}")
    body = HEADER.pack(MAGIC, VERSION, TYPE_FRAME, seq % SEQ_MOD, t_us % TIME_MOD, rows, cols)
    body += np.ascontiguousarray(values, dtype="<u2").tobytes()
    return body + struct.pack("<I", crc32(body[2:]))


def encode_command(command: int, arg: int = 0) -> bytes:
    body = COMMAND.pack(MAGIC, VERSION, command, arg & 0xFFFFFFFF)
    return body + struct.pack("<I", crc32(body[2:]))


def decode_command(packet: bytes) -> tuple[int, int] | None:
    """(command, arg) of a 12-byte command packet, or None if it is not one (emulator side)."""
    if len(packet) != COMMAND_SIZE or not packet.startswith(SYNC):
        return None
    magic, version, command, arg = COMMAND.unpack_from(packet)
    (crc,) = struct.unpack_from("<I", packet, COMMAND.size)
    return (command, arg) if crc == crc32(packet[2:COMMAND.size]) else None


@dataclass
class Frame:
    seq: int
    t_us: int  # device clock, wrapping at 2**32
    values: np.ndarray  # (rows, cols) uint16 raw ADC counts

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def same_as(self, other: "Frame") -> bool:
        return (self.seq, self.t_us, self.shape) == (other.seq, other.t_us, other.shape) and \
            bool(np.array_equal(self.values, other.values))


@dataclass
class ParserStats:
    frames: int = 0
    bytes: int = 0
    crc_errors: int = 0  # complete candidate frames whose CRC did not match
    truncated: int = 0  # a frame cut short: the next start marker came before its end
    bad_length: int = 0  # header rows/cols outside 1..64
    bad_header: int = 0  # marker found but unknown frame type
    garbage_bytes: int = 0  # bytes skipped while searching for a start marker
    seq_gaps: int = 0  # times the sequence number jumped
    frames_lost: int = 0  # frames missing according to the sequence numbers
    seq_restarts: int = 0  # sequence went backwards (device reset) or jumped by more than half the range

    @property
    def bad_frames(self) -> int:
        return self.crc_errors + self.truncated + self.bad_length + self.bad_header

    def as_dict(self) -> dict[str, int]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["bad_frames"] = self.bad_frames
        return d


@dataclass
class FrameParser:
    """Streaming parser: `feed(bytes) -> [Frame]`. Keeps partial frames between calls."""

    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)
    _last_seq: int | None = None

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes += len(data)
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        n = len(buf)
        while True:
            start = buf.find(SYNC, pos)
            if start < 0:
                keep = max(pos, n - (len(SYNC) - 1))  # a marker may straddle this read and the next
                self.stats.garbage_bytes += keep - pos
                pos = keep
                break
            self.stats.garbage_bytes += start - pos
            pos = start
            if n - start < HEADER_SIZE:
                break  # wait for the rest of the header
            _, _, ftype, seq, t_us, rows, cols = HEADER.unpack_from(buf, start)
            if ftype != TYPE_FRAME:
                pos = self._reject(start, start + HEADER_SIZE, "bad_header")
                continue
            if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
                pos = self._reject(start, start + HEADER_SIZE, "bad_length")
                continue
            end = start + HEADER_SIZE + 2 * rows * cols
            if n < end + CRC_SIZE:
                # Wait for the rest, unless a complete valid frame already starts inside this one: then
                # this header lied about its length (cut short or corrupted) and waiting would only
                # hold back good frames (up to 8 KB of them).
                inner = buf.find(SYNC, start + 1)
                if inner >= 0 and self._valid_at(inner):
                    self.stats.truncated += 1
                    pos = inner
                    continue
                break
            (crc,) = struct.unpack_from("<I", buf, end)
            if crc != zlib.crc32(memoryview(buf)[start + 2:end]):
                pos = self._reject(start, end + CRC_SIZE, "crc_errors")
                continue
            # copy out at once: a live numpy view would pin the bytearray and block `del buf[:pos]`
            values = np.frombuffer(buf, "<u2", rows * cols, start + HEADER_SIZE).astype(np.uint16)
            frames.append(Frame(seq, t_us, values.reshape(rows, cols)))
            self._track_seq(seq)
            pos = end + CRC_SIZE
        del buf[:pos]
        self.stats.frames += len(frames)
        return frames

    def _valid_at(self, start: int) -> bool:
        """A complete frame with a matching CRC starts at `start`."""
        buf = self._buf
        if len(buf) - start < HEADER_SIZE:
            return False
        _, _, ftype, _, _, rows, cols = HEADER.unpack_from(buf, start)
        end = start + HEADER_SIZE + 2 * rows * cols
        if ftype != TYPE_FRAME or not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM) or len(buf) < end + CRC_SIZE:
            return False
        return struct.unpack_from("<I", buf, end)[0] == zlib.crc32(memoryview(buf)[start + 2:end])

    def _reject(self, start: int, span_end: int, reason: str) -> int:
        """Count a rejected candidate; resume at a marker starting inside its span (it was cut short) or past it."""
        inner = self._buf.find(SYNC, start + 1, span_end + len(SYNC) - 1)
        if inner >= 0:
            self.stats.truncated += 1
            return inner
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        return start + 1

    def _track_seq(self, seq: int) -> None:
        last, self._last_seq = self._last_seq, seq
        if last is None:
            return
        gap = (seq - last - 1) % SEQ_MOD
        if gap == 0:
            return
        if gap >= SEQ_MOD // 2:  # went backwards: the device restarted (or a duplicate)
            self.stats.seq_restarts += 1
            return
        self.stats.seq_gaps += 1
        self.stats.frames_lost += gap

    def reset(self) -> None:
        """Drop buffered bytes (after a reconnect); a half-received frame counts as truncated."""
        if self._buf.startswith(SYNC):
            self.stats.truncated += 1
        elif self._buf:
            self.stats.garbage_bytes += len(self._buf)
        self._buf.clear()
        self._last_seq = None

    @property
    def buffered(self) -> int:
        return len(self._buf)
