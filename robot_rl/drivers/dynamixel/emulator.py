"""A chain of emulated Protocol 2.0 X-series servos on a pseudo-terminal, for tests without hardware.

The driver under test opens `emulator.port` (the pty's slave path) with the real dynamixel_sdk /
pyserial code, exactly as it would open /dev/ttyUSB0. Each servo keeps a real control table and:
- answers PING, READ, WRITE, SYNC_READ, SYNC_WRITE, REBOOT (status packets with error bytes:
  CRC, instruction, access, data range/limit, hardware alert);
- tracks its goal with a first-order response only while torque is on (a torque-off servo stays
  wherever `set_position` puts it: a human moving a limp leader arm);
- only hears the host at its own baud (pyserial's termios speed on the pty), so a wrong profile
  baud looks like real hardware: silence.
Knobs: `set_answering(id, False)` (a servo that stops answering), `vanish()` (unplugged adapter),
`set_hardware_error(id, bits)`.
"""
from __future__ import annotations

import math
import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field

from robot_rl.drivers.dynamixel import protocol as p

_SPEEDS = {getattr(termios, f"B{b}"): b for b in p.BAUD_CODES.values() if hasattr(termios, f"B{b}")}
_WRITABLE_RAM = [(64, 66), (68, 69), (80, 120)]  # torque, LED, status return level, gains..goal position


@dataclass
class EmulatedServo:
    id: int
    model: int
    position: float  # ticks (continuous)
    tau: float = 0.02  # s, first-order position response
    answering: bool = True
    garbled_reads: int = 0  # the next sync reads get a data-less CRC-error status (it heard a corrupted packet)
    velocity: float = 0.0  # ticks/s
    table: bytearray = field(default_factory=lambda: bytearray(p.TABLE_SIZE))

    def get(self, item: tuple[int, int], signed: bool = False) -> int:
        addr, size = item
        value = int.from_bytes(self.table[addr:addr + size], "little")
        return p.to_signed(value, size) if signed else value

    def set(self, item: tuple[int, int], value: int) -> None:
        addr, size = item
        self.table[addr:addr + size] = p.from_signed(value, size).to_bytes(size, "little")

    @property
    def torque(self) -> bool:
        return self.table[p.TORQUE_ENABLE[0]] == 1

    @property
    def baud(self) -> int:
        return p.BAUD_CODES.get(self.table[p.BAUD_RATE[0]], 0)

    def advance(self, dt: float) -> None:
        if self.torque and dt > 0:
            goal = self.get(p.GOAL_POSITION, signed=True)
            new = goal + (self.position - goal) * math.exp(-dt / self.tau)
            self.velocity = (new - self.position) / dt
            self.position = new
        elif not self.torque:
            self.velocity = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Present-value registers from the physical state."""
        self.set(p.PRESENT_POSITION, round(self.position))
        rpm = self.velocity / p.TICKS_PER_TURN * 60.0
        self.set(p.PRESENT_VELOCITY, round(rpm / p.VELOCITY_UNIT_RPM))
        error = self.get(p.GOAL_POSITION, signed=True) - self.position if self.torque else 0.0
        self.set(p.PRESENT_CURRENT, int(max(-1000, min(1000, 2.0 * error))))
        self.table[p.MOVING[0]] = int(abs(self.velocity) > 20)


class ServoChainEmulator:
    """Servos `ids` on one pty. Use as a context manager, or start()/close()."""

    def __init__(self, ids: list[int], model: int = 1060, baud: int = 1_000_000,
                 positions: dict[int, int] | None = None, tau: float = 0.02):
        code = {b: c for c, b in p.BAUD_CODES.items()}[baud]
        self.servos: dict[int, EmulatedServo] = {}
        for i in ids:
            s = EmulatedServo(i, model, float((positions or {}).get(i, p.CENTER_TICK)), tau)
            s.set(p.MODEL_NUMBER, model)
            s.set(p.FIRMWARE_VERSION, 52)
            s.set(p.ID, i)
            s.set(p.BAUD_RATE, code)
            s.set(p.RETURN_DELAY, 0)
            s.set(p.OPERATING_MODE, p.MODE_POSITION)
            s.set(p.MAX_POSITION_LIMIT, p.TICKS_PER_TURN - 1)
            s.set(p.MIN_POSITION_LIMIT, 0)
            s.set(p.STATUS_RETURN_LEVEL, 2)
            s.set(p.GOAL_POSITION, round(s.position))
            s.set(p.PRESENT_TEMPERATURE, 30)
            s.refresh()
            self.servos[i] = s
        self.lock = threading.RLock()
        self.packets: dict[int, int] = {}  # instruction -> count received (from the host, CRC ok)
        self.crc_errors = 0
        self.goal_writes = 0
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo / line editing before the host configures the port
        self.port = os.ttyname(self._slave)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"dxl-emulator{self.port}", daemon=True)
        self.vanished = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ServoChainEmulator":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._close_fds()

    def __enter__(self) -> "ServoChainEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = -1

    # -- knobs for tests ------------------------------------------------------------------------
    def vanish(self) -> None:
        """The adapter is unplugged: the device node disappears, open handles get I/O errors."""
        with self.lock:
            self.vanished = True
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._close_fds()

    def set_answering(self, servo_id: int, answering: bool) -> None:
        with self.lock:
            self.servos[servo_id].answering = answering

    def garble_sync_reads(self, servo_id: int, count: int = 1) -> None:
        """The servo's next `count` sync-read replies are a CRC-error status without data, as a real
        servo answers an instruction that arrived corrupted (noise on the bus, a half-seated cable)."""
        with self.lock:
            self.servos[servo_id].garbled_reads = count

    def set_position(self, servo_id: int, ticks: float) -> None:
        """Move a servo by hand (meaningful with torque off; a torque-on servo pulls back to its goal)."""
        with self.lock:
            self._advance()
            self.servos[servo_id].position = float(ticks)
            self.servos[servo_id].refresh()

    def set_goal_register(self, servo_id: int, ticks: int) -> None:
        """Leave a stale goal in the table (as a previous program might), without moving."""
        with self.lock:
            self.servos[servo_id].set(p.GOAL_POSITION, ticks)

    def set_hardware_error(self, servo_id: int, bits: int) -> None:
        """A hardware fault (e.g. 0x20 overload): the servo drops torque and raises the alert bit."""
        with self.lock:
            s = self.servos[servo_id]
            s.set(p.HARDWARE_ERROR, bits)
            if bits:
                s.set(p.TORQUE_ENABLE, 0)

    # -- inspection -----------------------------------------------------------------------------
    def position(self, servo_id: int) -> float:
        with self.lock:
            self._advance()
            return self.servos[servo_id].position

    def goal(self, servo_id: int) -> int:
        with self.lock:
            return self.servos[servo_id].get(p.GOAL_POSITION, signed=True)

    def torque(self, servo_id: int) -> bool:
        with self.lock:
            return self.servos[servo_id].torque

    def register(self, servo_id: int, item: tuple[int, int], signed: bool = False) -> int:
        with self.lock:
            self._advance()
            return self.servos[servo_id].get(item, signed)

    # -- serving --------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        for s in self.servos.values():
            s.advance(dt)

    def _host_baud(self) -> int:
        try:
            return _SPEEDS.get(termios.tcgetattr(self._master)[5], -1)  # the slave side's output speed
        except termios.error:
            return -1

    def _serve(self) -> None:
        parser = p.PacketParser()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except (OSError, ValueError):
                return
            baud = self._host_baud()
            out = bytearray()
            with self.lock:
                self._advance()
                for packet in parser.feed(data):
                    out += self.handle(packet, baud)
            if out:
                try:
                    os.write(self._master, out)
                except OSError:
                    return

    def handle(self, packet: p.Packet, baud: int) -> bytes:
        """Every listening servo's reply to one instruction packet (b"" when none answers)."""
        hearing = {i: s for i, s in self.servos.items() if s.answering and s.baud == baud}
        if not packet.crc_ok:
            self.crc_errors += 1
            s = hearing.get(packet.id)
            return p.build_status(s.id, p.ERR_CRC | self._alert(s)) if s else b""
        self.packets[packet.instruction] = self.packets.get(packet.instruction, 0) + 1
        if packet.instruction == p.SYNC_READ:
            return self._sync_read(packet.params, hearing)
        if packet.instruction == p.SYNC_WRITE:
            self._sync_write(packet.params, hearing)
            return b""
        targets = list(hearing.values()) if packet.id == p.BROADCAST_ID else \
            [hearing[packet.id]] if packet.id in hearing else []
        out = bytearray()
        for s in targets:
            error, data = self._execute(s, packet.instruction, packet.params)
            level = s.table[p.STATUS_RETURN_LEVEL[0]]
            replies = packet.instruction == p.PING or (packet.id != p.BROADCAST_ID and (
                level >= 2 or (level == 1 and packet.instruction == p.READ)))
            if replies:
                out += p.build_status(s.id, error | self._alert(s), data)
        return bytes(out)

    @staticmethod
    def _alert(s: EmulatedServo) -> int:
        return p.ERR_ALERT if s.table[p.HARDWARE_ERROR[0]] else 0

    def _execute(self, s: EmulatedServo, instruction: int, params: bytes) -> tuple[int, bytes]:
        if instruction == p.PING:
            return 0, s.table[0:2] + s.table[6:7]
        if instruction == p.READ:
            if len(params) != 4:
                return p.ERR_DATA_LENGTH, b""
            addr, size = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
            if addr + size > p.TABLE_SIZE:
                return p.ERR_ACCESS, b""
            return 0, bytes(s.table[addr:addr + size])
        if instruction == p.WRITE:
            if len(params) < 3:
                return p.ERR_DATA_LENGTH, b""
            return self._write(s, int.from_bytes(params[0:2], "little"), params[2:]), b""
        if instruction == p.REBOOT:
            s.set(p.HARDWARE_ERROR, 0)
            s.set(p.TORQUE_ENABLE, 0)
            return 0, b""
        return p.ERR_INSTRUCTION, b""

    def _write(self, s: EmulatedServo, addr: int, data: bytes) -> int:
        """Apply a write atomically, or return the error a real servo would report."""
        end = addr + len(data)
        if end > p.TABLE_SIZE:
            return p.ERR_ACCESS
        if addr < p.EEPROM_END:
            if s.torque or addr < p.ID[0]:  # EEPROM locked under torque; model/firmware read-only
                return p.ERR_ACCESS
        elif not any(lo <= addr and end <= hi for lo, hi in _WRITABLE_RAM):
            return p.ERR_ACCESS
        new = bytearray(s.table)
        new[addr:end] = data
        if new[p.TORQUE_ENABLE[0]] > 1 or new[p.BAUD_RATE[0]] not in p.BAUD_CODES or not 0 <= new[p.ID[0]] <= p.MAX_ID:
            return p.ERR_DATA_RANGE
        if new[p.TORQUE_ENABLE[0]] and s.table[p.HARDWARE_ERROR[0]]:
            return p.ERR_RESULT_FAIL  # a faulted servo needs a reboot before torque comes back
        if addr < p.GOAL_POSITION[0] + 4 and end > p.GOAL_POSITION[0]:
            goal = p.to_signed(int.from_bytes(new[116:120], "little"), 4)
            mode = new[p.OPERATING_MODE[0]]
            lo = p.to_signed(int.from_bytes(new[52:56], "little"), 4)
            hi = p.to_signed(int.from_bytes(new[48:52], "little"), 4)
            if mode == p.MODE_POSITION and not lo <= goal <= hi:
                return p.ERR_DATA_LIMIT
            self.goal_writes += 1
        s.table[:] = new
        if new[p.ID[0]] != s.id:  # id changed: re-key the chain
            self.servos.pop(s.id)
            s.id = new[p.ID[0]]
            self.servos[s.id] = s
        return 0

    def _sync_read(self, params: bytes, hearing: dict[int, EmulatedServo]) -> bytes:
        if len(params) < 5:
            return b""
        addr, size = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
        out = bytearray()
        for servo_id in params[4:]:
            s = hearing.get(servo_id)
            if s is None:
                continue
            if s.garbled_reads:
                s.garbled_reads -= 1
                out += p.build_status(s.id, p.ERR_CRC | self._alert(s))
            elif addr + size > p.TABLE_SIZE:
                out += p.build_status(s.id, p.ERR_ACCESS | self._alert(s))
            else:
                out += p.build_status(s.id, self._alert(s), bytes(s.table[addr:addr + size]))
        return bytes(out)

    def _sync_write(self, params: bytes, hearing: dict[int, EmulatedServo]) -> None:
        if len(params) < 5:
            return
        addr, size = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
        body = params[4:]
        for k in range(0, len(body) - size, size + 1):
            s = hearing.get(body[k])
            if s is not None:
                self._write(s, addr, body[k + 1:k + 1 + size])
