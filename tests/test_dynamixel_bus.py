"""Dynamixel bus, follower-arm loop and Protocol 2.0 emulator, without ROS.

Everything goes through the real dynamixel_sdk + pyserial code path: the emulator serves a pty and
the SDK opens its slave path like /dev/ttyUSB0. The emulator's packet code is checked against the
SDK's own CRC/stuffing and the ROBOTIS manual's example packets, so the two are independent.
"""
import math
import os
import time

import numpy as np
import pytest
import serial
from dynamixel_sdk import COMM_SUCCESS, PacketHandler, PortHandler

from robot_rl.config import ConfigError, Profile, from_dict
from robot_rl.drivers.dynamixel import protocol as p
from robot_rl.drivers.dynamixel.bus import BusError, DynamixelBus, PortLost, ServosNotAnswering
from robot_rl.drivers.dynamixel.emulator import ServoChainEmulator
from robot_rl.drivers.dynamixel.mapping import JointMap
from robot_rl.drivers.dynamixel.robot import FollowerArm
from dynamixel_arm import IDS, JOINTS
from waiting import wait_until

pytestmark = pytest.mark.timeout(120)
SERVOS = [  # listed out of joint order on purpose: the map sorts by profile joint order
    {"joint": "gripper", "id": 6, "servo_range": [-0.2, 1.0]},
    {"joint": "waist", "id": 1},
    {"joint": "shoulder", "id": 2, "direction": -1, "offset": 0.2},
    {"joint": "elbow", "id": 3, "offset": -0.3},
    {"joint": "wrist_pitch", "id": 4, "direction": -1},
    {"joint": "wrist_roll", "id": 5},
]


def make_profile(port: str, baud: int = 1_000_000, servos=None) -> Profile:
    return from_dict(Profile, {
        "name": "dxl_test",
        "robot": {"driver": "dynamixel", "control_rate_hz": 20.0, "state_rate_hz": 100.0, "gripper_joint": "gripper",
                  "joints": JOINTS},
        "follower": {"port": port, "baud": baud, "servos": servos or SERVOS},
    })


@pytest.fixture
def emu():
    with ServoChainEmulator(IDS) as e:
        yield e


@pytest.fixture
def bus(emu):
    profile = make_profile(emu.port)
    b = DynamixelBus(profile.follower, profile.robot)
    b.open()
    yield b
    b.close()


class CapturePort:
    """Stands in for PortHandler to capture exactly what the SDK would put on the wire."""

    def __init__(self):
        self.is_using, self.sent = False, b""

    def clearPort(self):
        pass

    def writePort(self, packet):
        self.sent = bytes(packet)
        return len(packet)


# -- protocol ---------------------------------------------------------------------------------------
def test_crc_and_packets_match_the_manual_and_the_sdk():
    ping = bytes.fromhex("FFFFFD0001030001194E")  # ROBOTIS e-Manual: PING id 1
    assert p.build_packet(1, p.PING) == ping
    status = bytes.fromhex("FFFFFD00010700550006042665 5D".replace(" ", ""))  # its reply: model 1030, fw 38
    assert p.build_status(1, 0, bytes([0x06, 0x04, 0x26])) == status
    assert p.parse_packets(status)[0].params == bytes([0, 0x06, 0x04, 0x26])
    sdk = PacketHandler(2.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        data = bytes(rng.integers(0, 256, int(rng.integers(1, 60)), dtype=np.uint8))
        assert p.crc16(data) == sdk.updateCRC(0, list(data), len(data))
    port = CapturePort()
    sdk.write4ByteTxOnly(port, 7, 116, 1234)
    assert port.sent == p.build_packet(7, p.WRITE, bytes([116, 0]) + (1234).to_bytes(4, "little"))
    # stuffing: FF FF FD in a body gets an extra FD; the SDK's own add/remove agree with ours
    body = bytes([p.WRITE, 116, 0, 0xFF, 0xFF, 0xFD, 0x00])
    stuffed = p.build_packet(7, p.WRITE, body[1:])
    assert stuffed[7:-2] == body[:6] + b"\xfd" + body[6:] and int.from_bytes(stuffed[5:7], "little") == len(stuffed) - 7
    unstuffed = list(p.HEADER) + [7, len(body) + 2, 0] + list(body) + [0, 0]
    assert bytes(sdk.addStuffing(list(unstuffed))[:-2]) == stuffed[:-2]
    assert bytes(sdk.removeStuffing(list(stuffed))[:len(body) + 7]) == bytes(unstuffed[:-2])
    # NB: sdk.txPacket discards addStuffing's result when the packet grows, so the SDK puts such bodies on
    # the wire unstuffed; the emulator accepts both (test below writes and reads back FF FF FD bytes).
    assert p.unstuff(p.stuff(b"\x03\xff\xff\xfd\xff\xff\xfd\xfd")) == b"\x03\xff\xff\xfd\xff\xff\xfd\xfd"


def test_parser_resynchronises_after_noise_truncation_and_bad_crc():
    good = p.build_packet(3, p.READ, bytes([132, 0, 4, 0]))
    bad = bytearray(p.build_packet(4, p.PING))
    bad[-1] ^= 0xFF
    parser = p.PacketParser()
    got = list(parser.feed(b"\x00\xff\x13" + good[:5]))
    assert got == []  # header seen, body not yet complete: wait
    got = list(parser.feed(good[5:] + b"\xff\xff\xfd\x00\xfe\xff\xff" + bytes(bad) + good))
    assert [(k.id, k.instruction, k.crc_ok) for k in got] == [(3, p.READ, True), (4, p.PING, False), (3, p.READ, True)]
    assert got[0].params == bytes([132, 0, 4, 0]) and parser.discarded >= 3


# -- the emulator through the SDK -------------------------------------------------------------------
def test_emulator_answers_the_sdk_with_values_errors_and_stuffing(emu):
    port, sdk = PortHandler(emu.port), PacketHandler(2.0)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        model, result, error = sdk.ping(port, 3)
        assert (model, result, error) == (1060, COMM_SUCCESS, 0)
        assert sdk.ping(port, 9)[1] != COMM_SUCCESS  # no such servo: silence
        # stuffing both ways: a goal whose bytes contain FF FF FD, read back through a stuffed status packet
        assert sdk.write1ByteTxRx(port, 3, 11, p.MODE_EXTENDED_POSITION) == (COMM_SUCCESS, 0)
        value = p.to_signed(0x00FDFFFF, 4)
        assert sdk.write4ByteTxRx(port, 3, 116, p.from_signed(value, 4)) == (COMM_SUCCESS, 0)
        assert sdk.read4ByteTxRx(port, 3, 116) == (0x00FDFFFF, COMM_SUCCESS, 0)
        # status errors a real servo gives
        assert sdk.write4ByteTxRx(port, 3, 132, 100)[1] == p.ERR_ACCESS  # present position is read-only
        assert sdk.write1ByteTxRx(port, 2, 64, 1) == (COMM_SUCCESS, 0)
        assert sdk.write1ByteTxRx(port, 2, 11, 4)[1] == p.ERR_ACCESS  # EEPROM locked while torque is on
        assert sdk.write1ByteTxRx(port, 2, 64, 7)[1] == p.ERR_DATA_RANGE
        assert sdk.write4ByteTxRx(port, 2, 116, 5000)[1] == p.ERR_DATA_LIMIT  # outside position-mode limits
        emu.set_hardware_error(4, 0x20)
        _, result, error = sdk.ping(port, 4)
        assert result == COMM_SUCCESS and error & p.ERR_ALERT and not emu.torque(4)
        assert sdk.read1ByteTxRx(port, 4, 70)[0] == 0x20
    finally:
        port.closePort()
    with serial.Serial(emu.port, 1_000_000, timeout=1.0) as raw:  # what the SDK cannot send
        raw.write(p.build_packet(1, 0x77))
        reply = p.parse_packets(raw.read(11))
        assert reply[0].instruction == p.STATUS and reply[0].error == p.ERR_INSTRUCTION
        corrupt = bytearray(p.build_packet(1, p.PING))
        corrupt[-2] ^= 0x55
        raw.write(bytes(corrupt))
        assert p.parse_packets(raw.read(11))[0].error == p.ERR_CRC


def test_torque_off_servo_ignores_its_goal_and_can_be_moved_by_hand(emu):
    port, sdk = PortHandler(emu.port), PacketHandler(2.0)
    port.openPort()
    try:
        assert sdk.write4ByteTxRx(port, 1, 116, 3000) == (COMM_SUCCESS, 0)
        time.sleep(0.2)
        assert emu.position(1) == pytest.approx(2048, abs=0.5)  # torque off: no motion
        emu.set_position(1, 1500)  # a human moves the limp servo
        assert sdk.read4ByteTxRx(port, 1, 132)[0] == 1500
        assert sdk.write1ByteTxRx(port, 1, 64, 1) == (COMM_SUCCESS, 0)
        deadline = time.monotonic() + 5
        while abs(emu.position(1) - 3000) > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emu.position(1) == pytest.approx(3000, abs=2)  # torque on: it tracks the goal
    finally:
        port.closePort()


# -- mapping and the bus ----------------------------------------------------------------------------
def test_joint_tick_mapping_direction_offset_and_gripper_range():
    profile = make_profile("/dev/null")
    m = JointMap(profile.follower, profile.robot)
    assert m.ids == IDS and m.joints == [j["name"] for j in JOINTS]
    quarter = p.CENTER_TICK + 1024  # +pi/2 servo angle
    joints = m.to_joint([quarter] * 6)
    assert joints[0] == pytest.approx(math.pi / 2)
    assert joints[1] == pytest.approx(-math.pi / 2 + 0.2)  # direction -1, offset 0.2
    assert joints[2] == pytest.approx(math.pi / 2 - 0.3)
    assert joints[3] == pytest.approx(-math.pi / 2)
    # gripper: servo angle -0.2 rad -> lower (0.0), 1.0 rad -> upper (0.04), linear between
    g = m.to_joint([[0, 0, 0, 0, 0, p.CENTER_TICK + a / (2 * math.pi) * 4096] for a in (-0.2, 0.4, 1.0)])[:, 5]
    assert g == pytest.approx([0.0, 0.02, 0.04], abs=1e-4)
    q = np.array([0.3, -0.4, 1.1, -1.2, 2.0, 0.01])
    assert m.to_joint(m.to_ticks(q)) == pytest.approx(q, abs=2 * 2 * math.pi / 4096)
    bad = [dict(s) for s in SERVOS]
    bad[1]["offset"] = 2.5  # waist range [-2, 2] would need ticks below 0
    with pytest.raises(ConfigError, match=r"follower.servos\[1\].*waist.*offset"):
        JointMap(make_profile("/dev/null", servos=bad).follower, profile.robot)


def test_bus_reads_states_and_writes_goals_in_joint_units(emu, bus):
    target = np.array([0.5, -0.3, 0.2, 0.7, -1.0, 0.03])
    ticks = bus.map.to_ticks(target)
    for servo_id, t in zip(IDS, ticks):
        emu.set_position(servo_id, t)
    pos, vel, eff = bus.read_state()
    assert pos == pytest.approx(target, abs=0.002) and vel == pytest.approx(np.zeros(6)) and eff.shape == (6,)
    assert bus.read_positions() == pytest.approx(target, abs=0.002)
    bus.torque_on_in_place()
    goal = np.array([0.6, -0.2, 0.1, 0.6, -0.9, 0.02])
    sent = bus.write_goals(goal)  # a sync write has no reply: wait for the emulator to take it
    assert wait_until(lambda: [emu.goal(i) for i in IDS] == list(sent)), ([emu.goal(i) for i in IDS], sent)
    assert bus.map.to_joint(sent) == pytest.approx(goal, abs=0.002)
    deadline = time.monotonic() + 5
    while np.max(np.abs(bus.read_state()[0] - goal)) > 0.005 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bus.read_state()[0] == pytest.approx(goal, abs=0.005)


def test_missing_port_wrong_baud_and_missing_servo_are_clear_errors(tmp_path):
    profile = make_profile(str(tmp_path / "ttyUSB_follower"))
    with pytest.raises(BusError, match=r"ttyUSB_follower does not exist.*plugged in.*udev"):
        DynamixelBus(profile.follower, profile.robot).open()
    with ServoChainEmulator(IDS, baud=57_600) as emu:
        bus = DynamixelBus(make_profile(emu.port).follower, profile.robot)
        with pytest.raises(BusError) as err:
            bus.open()
        text = str(err.value)
        assert f"no servo answered on {emu.port} at 1000000 baud" in text
        assert "answer at 57600 baud" in text and "follower.baud" in text
        assert not bus.opened
    with ServoChainEmulator(IDS) as emu:
        emu.set_answering(3, False)
        bus = DynamixelBus(make_profile(emu.port).follower, profile.robot)
        with pytest.raises(ServosNotAnswering, match=r"id 3 \(elbow\) did not answer") as err:
            bus.open()
        assert err.value.ids == [3]


# -- the follower-arm loop --------------------------------------------------------------------------
def run_cycles(arm, seconds, command=None, until=None):
    """Drive the arm's cycle at ~100 Hz from the test thread, streaming `command` at the control rate,
    for `seconds` (or, with `until`, until that holds; then `seconds` is the timeout)."""
    samples, end, next_cmd = [], time.monotonic() + seconds, 0.0
    while time.monotonic() < end and not (until is not None and until()):
        if command is not None and time.monotonic() >= next_cmd:
            arm.command(command)
            next_cmd = time.monotonic() + 0.05
        s = arm.step()
        if s is not None:
            samples.append(s)
        time.sleep(0.01)
    return samples


def test_arm_starts_in_place_then_approaches_a_far_command_at_the_velocity_limit(emu):
    start = {1: 1700, 2: 2300, 3: 2048, 4: 2048, 5: 2048, 6: 2400}
    for servo_id, t in start.items():
        emu.set_position(servo_id, t)
        emu.set_goal_register(servo_id, 3500 if servo_id != 6 else 2000)  # stale: torque-on must not go there
    arm = FollowerArm(make_profile(emu.port))
    arm.connect()
    try:
        run_cycles(arm, 0.3)
        assert all(abs(emu.position(i) - start[i]) <= 1 for i in IDS) and all(emu.torque(i) for i in IDS)
        target = arm.last_sample.position.copy()
        target[0] = 1.8  # ~2.4 rad away at 1 rad/s
        samples = run_cycles(arm, 1.0, target)
        t = np.array([s.stamp for s in samples])
        q = np.array([s.position[0] for s in samples])
        window = t >= t[0] + 0.3
        speed = (q[window][-1] - q[window][0]) / (t[window][-1] - t[window][0])
        assert 0.8 <= speed <= 1.1  # moving, at the 1 rad/s limit, never faster
        assert np.max(np.diff(q)) < 0.05  # no cycle jumps
        assert arm.envelope.counters.velocity_limited >= 1
    finally:
        arm.disconnect()
    assert not any(emu.torque(i) for i in IDS)  # torque off on exit


def test_out_of_limit_command_is_clipped_before_the_servos(emu):
    arm = FollowerArm(make_profile(emu.port))
    arm.connect()
    try:
        target = arm.last_sample.position.copy()
        target[3] = 4.0  # wrist_pitch upper limit 1.5
        target[5] = 0.5  # gripper upper limit 0.04
        run_cycles(arm, 1.3, target)
        upper_ticks = arm.bus.map.to_ticks([0, 0, 0, 1.5, 0, 0.04])
        assert emu.goal(4) == upper_ticks[3] and emu.goal(6) == upper_ticks[5]
        assert arm.last_sample.position[3] == pytest.approx(1.5, abs=0.01)
        c = arm.envelope.counters
        assert c.position_clips > 0 and c.clips_per_joint["wrist_pitch"] > 0 and c.clips_per_joint["gripper"] > 0
    finally:
        arm.disconnect()


def test_a_data_less_error_reply_is_a_failed_read_not_a_crash(emu, bus):
    """A servo that heard a corrupted instruction answers a CRC-error status with no data; the SDK
    counts that as a successful sync read, and reading its fields used to raise IndexError (which
    crashed the robot node's arm worker)."""
    before = bus.read_state()[0]
    emu.garble_sync_reads(3)
    with pytest.raises(ServosNotAnswering, match=r"id 3 \(elbow\)") as err:
        bus.read_state()
    assert err.value.ids == [3] and bus.read_failures == 1
    assert bus.read_state()[0] == pytest.approx(before, abs=0.002)  # the next read is whole again
    emu.garble_sync_reads(5)
    with pytest.raises(ServosNotAnswering, match=r"id 5 \(wrist_roll\)"):
        bus.read_positions()


def test_servo_that_stops_answering_makes_the_arm_hold_and_is_named(emu):
    arm = FollowerArm(make_profile(emu.port))
    arm.connect()
    try:
        target = arm.last_sample.position + np.array([1.0, 1.0, 0, 0, 0, 0])
        run_cycles(arm, 0.3, target)
        emu.set_answering(3, False)
        run_cycles(arm, 10, target, until=lambda: arm.missing)
        assert arm.missing == [3] and arm.servo_losses == 1
        run_cycles(arm, 0.2, target)  # let the emulator take the (reply-less) hold write
        goals = [emu.goal(i) for i in IDS]
        run_cycles(arm, 0.5, target)
        assert [emu.goal(i) for i in IDS] == goals  # holding: no new goals while id 3 is silent
        assert abs(emu.position(1) - goals[0]) < 20  # and the others stopped where they were
        diag = arm.diagnostics()
        assert diag["missing_ids"] == "3" and diag["missing_joints"] == "elbow" and diag["holding"] == "true"
        assert "id 3 (elbow)" in arm.envelope.counters.last_reject_reason
        emu.set_answering(3, True)
        run_cycles(arm, 10, until=lambda: not arm.missing)
        assert arm.missing == [] and arm.recoveries == 1 and all(emu.torque(i) for i in IDS)
        held = emu.goal(1)
        run_cycles(arm, 0.3)
        assert emu.goal(1) == held  # back, but holding until a fresh command
        run_cycles(arm, 5, target, until=lambda: emu.goal(1) != held)
        assert emu.goal(1) != held
    finally:
        arm.disconnect()


def test_disconnect_turns_torque_off_on_every_servo_that_answers(emu, caplog):
    """A silent servo (or one missed status packet) must not leave the rest of the arm torqued."""
    arm = FollowerArm(make_profile(emu.port))
    arm.connect()
    run_cycles(arm, 0.2)
    assert all(emu.torque(i) for i in IDS)
    emu.set_answering(2, False)
    with caplog.at_level("WARNING"):
        arm.disconnect()
    assert [i for i in IDS if emu.torque(i)] == [2]  # only the silent one (a real one keeps its torque)
    assert "torque may still be on for follower arm servo id 2 (shoulder) (the others are off)" in caplog.text


def test_unplugged_adapter_raises_port_lost(emu):
    arm = FollowerArm(make_profile(emu.port))
    arm.connect()
    run_cycles(arm, 0.1)
    emu.vanish()
    with pytest.raises(PortLost, match=emu.port):
        for _ in range(50):
            arm.step()
    arm.disconnect()
    assert not os.path.exists(emu.port)
