"""Dynamixel Protocol 2.0 wire format and the X-series control-table facts this project relies on.

The bus driver talks through the vendor's `dynamixel_sdk`; this module is the independent,
from-the-spec description the emulator speaks (so a test compares two implementations, not one with
itself). Packet: FF FF FD 00 | id | length (LE, counts instruction..CRC) | instruction | params | CRC-16
(polynomial 0x8005, init 0, over everything before it, after byte stuffing). Stuffing: wherever
FF FF FD occurs in instruction+params, an extra FD follows, so the header never appears in a body.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
MAX_LENGTH = 1024  # the SDK's packet buffer; longer length fields are line noise

# Instructions
PING, READ, WRITE, REG_WRITE, ACTION, FACTORY_RESET, REBOOT, CLEAR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x10
STATUS = 0x55
SYNC_READ, SYNC_WRITE, BULK_READ, BULK_WRITE = 0x82, 0x83, 0x92, 0x93

# Status error byte: a number in the low 7 bits, plus the alert bit (see Hardware Error Status)
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_DATA_RANGE, ERR_DATA_LENGTH, ERR_DATA_LIMIT, ERR_ACCESS = range(1, 8)
ERR_ALERT = 0x80

# X-series control table (XL330 / XL430 / XM430 share these addresses); (address, size)
MODEL_NUMBER = (0, 2)
FIRMWARE_VERSION = (6, 1)
ID = (7, 1)
BAUD_RATE = (8, 1)
RETURN_DELAY = (9, 1)
OPERATING_MODE = (11, 1)
MAX_POSITION_LIMIT = (48, 4)
MIN_POSITION_LIMIT = (52, 4)
TORQUE_ENABLE = (64, 1)
LED = (65, 1)
STATUS_RETURN_LEVEL = (68, 1)
HARDWARE_ERROR = (70, 1)
GOAL_POSITION = (116, 4)
MOVING = (122, 1)
PRESENT_CURRENT = (126, 2)  # Present Load (0.1 %) on XL430
PRESENT_VELOCITY = (128, 4)
PRESENT_POSITION = (132, 4)
PRESENT_TEMPERATURE = (146, 1)
TABLE_SIZE = 147
EEPROM_END = 64  # addresses below are EEPROM: writable only with torque off

BAUD_CODES = {0: 9600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000}
MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_POSITION = 3, 4, 5
MODELS = {1020: "XM430-W350", 1060: "XL430-W250", 1190: "XL330-M077", 1200: "XL330-M288"}
HARDWARE_ERROR_BITS = {0x01: "input voltage", 0x04: "overheating", 0x08: "motor encoder",
                       0x10: "electrical shock", 0x20: "overload"}

TICKS_PER_TURN = 4096
CENTER_TICK = 2048
VELOCITY_UNIT_RPM = 0.229


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0) -> int:
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert FD after every FF FF FD in instruction+params."""
    out = bytearray()
    for i, b in enumerate(body):
        out.append(b)
        if b == 0xFD and i >= 2 and body[i - 2] == 0xFF and body[i - 1] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Drop the FD that follows each FF FF FD (inverse of `stuff`)."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF \
                and i + 1 < len(body) and body[i + 1] == 0xFD:
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


def build_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    body = stuff(bytes([instruction]) + bytes(params))
    head = HEADER + bytes([servo_id]) + (len(body) + 2).to_bytes(2, "little") + body
    return head + crc16(head).to_bytes(2, "little")


def build_status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    return build_packet(servo_id, STATUS, bytes([error]) + bytes(params))


@dataclass
class Packet:
    id: int
    instruction: int
    params: bytes  # unstuffed
    crc_ok: bool = True

    @property
    def error(self) -> int:
        """Status packets: the error byte."""
        return self.params[0] if self.instruction == STATUS and self.params else 0


class PacketParser:
    """Incremental parser for a byte stream: resynchronises on the header after noise."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.discarded = 0  # bytes thrown away while hunting for a header

    def feed(self, data: bytes) -> Iterator[Packet]:
        self.buffer += data
        while True:
            start = self.buffer.find(HEADER)
            if start < 0:
                keep = 3 if self.buffer.endswith(b"\xff\xff\xfd") else 2 if self.buffer.endswith(b"\xff\xff") \
                    else 1 if self.buffer.endswith(b"\xff") else 0
                self.discarded += len(self.buffer) - keep
                del self.buffer[: len(self.buffer) - keep]
                return
            self.discarded += start
            del self.buffer[:start]
            if len(self.buffer) < 7:
                return
            length = int.from_bytes(self.buffer[5:7], "little")
            if length < 3 or length > MAX_LENGTH:  # not a real header: skip it
                del self.buffer[:1]
                self.discarded += 1
                continue
            total = 7 + length
            if len(self.buffer) < total:
                return
            raw = bytes(self.buffer[:total])
            del self.buffer[:total]
            crc_ok = crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
            body = unstuff(raw[7:-2])
            yield Packet(raw[4], body[0], body[1:], crc_ok)


def parse_packets(data: bytes) -> list[Packet]:
    return list(PacketParser().feed(data))


def to_signed(value: int, size: int) -> int:
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def from_signed(value: int, size: int) -> int:
    return int(value) & ((1 << (8 * size)) - 1)
