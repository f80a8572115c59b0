"""One chain of Dynamixel X-series servos over the vendor SDK (Protocol 2.0), in joint units.

Opening checks the whole chain (port, baud, every id, hardware alerts) and says what to check when
it fails; reads and writes are group sync transactions (one packet out per cycle). Failures are
typed so the callers can react: PortLost (adapter gone -> reconnect), ServosNotAnswering (named ids
-> hold), BusError (anything else, with what to check).
"""
from __future__ import annotations

import os
import select
import termios

import numpy as np
import serial
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

from robot_rl.config.profile import DynamixelBusSpec, RobotSpec
from robot_rl.drivers.dynamixel import protocol as p
from robot_rl.drivers.dynamixel.mapping import JointMap

SCAN_BAUDS = [1_000_000, 57_600, 115_200, 2_000_000, 3_000_000, 4_000_000]
TORQUE_OFF_ATTEMPTS = 3
_STATE = (p.PRESENT_CURRENT[0], p.PRESENT_POSITION[0] + 4 - p.PRESENT_CURRENT[0])  # current..position: 10 bytes
_IO_ERRORS = (serial.SerialException, OSError, termios.error)


class WaitingPortHandler(PortHandler):
    """The SDK's PortHandler, except that an empty read waits up to 1 ms for bytes instead of returning.

    The SDK polls readPort in a loop until a status packet or its timeout arrives; with pyserial's
    timeout=0 that spins a core for every transaction (and ~35 ms per silent servo), starving the
    control loop and everything else on a small machine. Packet parsing and timeouts stay the SDK's.
    """

    def readPort(self, length):
        data = self.ser.read(length)
        if not data:
            select.select([self.ser.fileno()], [], [], 0.001)
            data = self.ser.read(length)
        return data


class BusError(RuntimeError):
    """The chain cannot be used; the message names the port/ids and what to check."""


class PortLost(BusError):
    """The serial adapter went away (unplugged, power loss of the USB hub)."""


class ServosNotAnswering(BusError):
    def __init__(self, message: str, ids: list[int]):
        super().__init__(message)
        self.ids = ids


def _hardware_error_text(bits: int) -> str:
    return ", ".join(name for bit, name in p.HARDWARE_ERROR_BITS.items() if bits & bit) or f"0x{bits:02x}"


class DynamixelBus:
    def __init__(self, spec: DynamixelBusSpec, robot: RobotSpec, role: str = "follower"):
        self.spec, self.role = spec, role
        self.map = JointMap(spec, robot, role)  # ConfigError on an unreachable joint range
        self.ids = self.map.ids
        self.port = WaitingPortHandler(spec.port)
        self.packet = PacketHandler(2.0)
        self.opened = False
        self.models: dict[int, int] = {}
        self.read_failures = 0
        self._state_read: GroupSyncRead | None = None
        self._position_read: GroupSyncRead | None = None
        self._goal_write: GroupSyncWrite | None = None

    @property
    def where(self) -> str:
        return f"{self.role} arm on {self.spec.port} at {self.spec.baud} baud"

    # -- open / close ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the port, ping every servo and set operating modes; raises BusError saying what to check."""
        path = self.spec.port
        if not os.path.exists(path):
            raise BusError(f"{self.role} arm: serial port {path} does not exist: check that the U2D2/USB adapter is "
                           f"plugged in and powered, the udev rules (hardware/udev/99-robot-rl.rules) and "
                           f"`ls -l /dev/robot_rl/ /dev/serial/by-id/`")
        try:
            if not self.port.openPort():
                raise BusError(f"{self.role} arm: cannot open {path}")
            if not self.port.setBaudRate(self.spec.baud):
                raise BusError(f"{self.role} arm: baud {self.spec.baud} is not supported by the SDK; use one of "
                               f"{', '.join(map(str, p.BAUD_CODES.values()))} (profile {self.role}.baud)")
        except _IO_ERRORS as e:
            raise BusError(f"{self.role} arm: cannot open {path}: {e}: check permissions (dialout group, udev "
                           f"MODE) and that no other program (Dynamixel Wizard, another node) holds the port") from None
        self.opened = True
        try:
            self._check_chain()
            self._set_modes()
        except BaseException:
            self.close()
            raise
        self._state_read = self._group_read(*_STATE)
        self._position_read = self._group_read(*p.PRESENT_POSITION)
        self._goal_write = GroupSyncWrite(self.port, self.packet, *p.GOAL_POSITION)
        for i in self.ids:
            self._goal_write.addParam(i, [0, 0, 0, 0])

    def _group_read(self, address: int, size: int) -> GroupSyncRead:
        group = GroupSyncRead(self.port, self.packet, address, size)
        for i in self.ids:
            group.addParam(i)
        return group

    def _check_chain(self) -> None:
        answers = {i: self._io(self.packet.ping, self.port, i) for i in self.ids}
        missing = [i for i, (_, result, _) in answers.items() if result != COMM_SUCCESS]
        if len(missing) == len(self.ids):
            found = self._scan_baud()
            hint = (f"the servos answer at {found} baud: set {self.role}.baud: {found} in the profile (or change the "
                    f"servos' baud with Dynamixel Wizard)" if found else
                    f"check servo power (the arm's supply is on), the cable from the adapter to the first servo, and "
                    f"that the profile's {self.role}.baud matches the servos' baud (Dynamixel Wizard can scan)")
            raise BusError(f"no servo answered on {self.spec.port} at {self.spec.baud} baud "
                           f"({self.role} arm, expected {self.map.describe(self.ids)}): {hint}")
        if missing:
            ok = [i for i in self.ids if i not in missing]
            raise ServosNotAnswering(
                f"servo {self.map.describe(missing)} did not answer on {self.spec.port} at {self.spec.baud} baud "
                f"({self.role} arm; ids {ok} did): check the cable into those servos and their ids (Dynamixel "
                f"Wizard)", missing)
        self.models = {i: model for i, (model, _, _) in answers.items()}
        for i, (_, _, error) in answers.items():
            if error & p.ERR_ALERT:
                bits, _, _ = self._io(self.packet.read1ByteTxRx, self.port, i, p.HARDWARE_ERROR[0])
                raise BusError(f"{self.role} arm servo {self.map.describe([i])} reports a hardware error "
                               f"({_hardware_error_text(bits)}): remove the cause, then power-cycle the arm (or "
                               f"reboot the servo in Dynamixel Wizard)")

    def _scan_baud(self) -> int:
        """Which common baud the first servo answers at (0 if none): turns silence into a precise hint."""
        found = 0
        for baud in [b for b in SCAN_BAUDS if b != self.spec.baud]:
            self._io(self.port.setBaudRate, baud)
            _, result, _ = self._io(self.packet.ping, self.port, self.ids[0])
            if result == COMM_SUCCESS:
                found = baud
                break
        self._io(self.port.setBaudRate, self.spec.baud)
        return found

    def _set_modes(self) -> None:
        for k, i in enumerate(self.ids):
            mode = self._read(i, p.OPERATING_MODE)
            if mode != self.map.modes[k]:
                self._write(i, p.TORQUE_ENABLE, 0)  # EEPROM writes need torque off
                self._write(i, p.OPERATING_MODE, self.map.modes[k])

    def close(self) -> None:
        if self.opened:
            try:
                self.port.closePort()
            except _IO_ERRORS:
                pass
            self.opened = False

    # -- single-servo access (setup, torque) ----------------------------------------------------
    def _io(self, fn, *args):
        try:
            return fn(*args)
        except _IO_ERRORS as e:
            self.port.is_using = False
            raise PortLost(f"{self.role} arm: lost the serial port {self.spec.port} ({e}): check the USB cable "
                           f"and adapter") from None

    def _read(self, servo_id: int, item: tuple[int, int]) -> int:
        fn = {1: self.packet.read1ByteTxRx, 2: self.packet.read2ByteTxRx, 4: self.packet.read4ByteTxRx}[item[1]]
        value, result, error = self._io(fn, self.port, servo_id, item[0])
        self._check(servo_id, result, error, f"read address {item[0]}")
        return value

    def _write(self, servo_id: int, item: tuple[int, int], value: int) -> None:
        fn = {1: self.packet.write1ByteTxRx, 2: self.packet.write2ByteTxRx, 4: self.packet.write4ByteTxRx}[item[1]]
        result, error = self._io(fn, self.port, servo_id, item[0], p.from_signed(value, item[1]))
        self._check(servo_id, result, error, f"write address {item[0]}")

    def _check(self, servo_id: int, result: int, error: int, what: str) -> None:
        if result != COMM_SUCCESS:
            raise ServosNotAnswering(f"{self.role} arm servo {self.map.describe([servo_id])} stopped answering on "
                                     f"{self.spec.port} ({what}: {self.packet.getTxRxResult(result)}): check its "
                                     f"cable and power", [servo_id])
        if error & 0x7F:
            raise BusError(f"{self.role} arm servo {self.map.describe([servo_id])} refused to {what}: "
                           f"{self.packet.getRxPacketError(error)}")

    def set_torque(self, on: bool) -> None:
        """Torque on stops at the first servo that fails (connect reports it). Torque off tries every
        servo, each up to TORQUE_OFF_ATTEMPTS times: one missed status packet must not leave the rest
        of the arm torqued. The servos that never confirmed are named at the end."""
        if on:
            for i in self.ids:
                self._write(i, p.TORQUE_ENABLE, 1)
            return
        failed: dict[int, BusError] = {}
        for i in self.ids:
            for _ in range(TORQUE_OFF_ATTEMPTS):
                try:
                    self._write(i, p.TORQUE_ENABLE, 0)
                    failed.pop(i, None)
                    break
                except BusError as e:
                    failed[i] = e
        if failed:
            ids = list(failed)
            raise ServosNotAnswering(f"torque may still be on for {self.role} arm servo {self.map.describe(ids)} "
                                     f"(the others are off): {failed[ids[0]]}", ids)

    def torque_on_in_place(self) -> np.ndarray:
        """Goal := present position, then torque on: enabling torque never moves the arm. Returns ticks."""
        ticks = np.array([self._read(i, p.PRESENT_POSITION) for i in self.ids])
        ticks = np.array([p.to_signed(int(t), 4) for t in ticks])
        for i, t in zip(self.ids, ticks):
            self._write(i, p.GOAL_POSITION, int(t))
        self.set_torque(True)
        return ticks

    # -- cyclic access --------------------------------------------------------------------------
    def _sync_read(self, group: GroupSyncRead) -> None:
        result = self._io(group.txRxPacket)
        # the SDK calls a reply without the asked-for data a success (an error status, e.g. a servo
        # that heard a corrupted instruction): reading its fields would raise IndexError
        short = [i for i in self.ids if len(group.data_dict.get(i) or ()) < group.data_length]
        if result == COMM_SUCCESS and not short:
            return
        self.read_failures += 1
        silent = [i for i in self.ids if self._io(self.packet.ping, self.port, i)[1] != COMM_SUCCESS]
        if silent:
            raise ServosNotAnswering(f"{self.role} arm servo {self.map.describe(silent)} stopped answering on "
                                     f"{self.spec.port}: check its cable and power", silent)
        blamed = short[:1] or [self.ids[0]]  # a one-off glitch: the first servo whose reply was incomplete
        raise ServosNotAnswering(f"{self.role} arm servo {self.map.describe(blamed)} sent an incomplete reply on "
                                 f"{self.spec.port}: check its cable and power (noise on the bus)", blamed)

    def read_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, velocities (joint units) and effort (Present Current/Load register, signed) in joint order."""
        assert self._state_read is not None, "bus not open"
        g = self._state_read
        self._sync_read(g)
        cur = np.array([p.to_signed(g.getData(i, p.PRESENT_CURRENT[0], 2), 2) for i in self.ids], dtype=np.float64)
        vel = np.array([p.to_signed(g.getData(i, p.PRESENT_VELOCITY[0], 4), 4) for i in self.ids])
        pos = np.array([p.to_signed(g.getData(i, p.PRESENT_POSITION[0], 4), 4) for i in self.ids])
        return self.map.to_joint(pos), self.map.velocity_to_joint(vel), cur * np.sign(self.map.scale)

    def read_ticks(self) -> np.ndarray:
        """Present positions (raw ticks, joint order) in one sync read."""
        assert self._position_read is not None, "bus not open"
        g = self._position_read
        self._sync_read(g)
        return np.array([p.to_signed(g.getData(i, p.PRESENT_POSITION[0], 4), 4) for i in self.ids])

    def read_positions(self) -> np.ndarray:
        return self.map.to_joint(self.read_ticks())

    def write_goals(self, joints: np.ndarray) -> np.ndarray:
        """One sync-write packet of goal positions (joint order); returns the ticks sent."""
        assert self._goal_write is not None, "bus not open"
        ticks = self.map.to_ticks(joints)
        self.write_ticks(ticks)
        return ticks

    def write_ticks(self, ticks) -> None:
        assert self._goal_write is not None, "bus not open"
        for i, t in zip(self.ids, ticks):
            self._goal_write.changeParam(i, list(p.from_signed(int(t), 4).to_bytes(4, "little")))
        result = self._io(self._goal_write.txPacket)
        if result != COMM_SUCCESS:
            raise BusError(f"{self.role} arm: goal write failed on {self.spec.port}: "
                           f"{self.packet.getTxRxResult(result)}")

    def ping(self, ids: list[int]) -> list[int]:
        """The subset of `ids` that answers a ping now."""
        return [i for i in ids if self._io(self.packet.ping, self.port, i)[1] == COMM_SUCCESS]
