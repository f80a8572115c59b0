"""numpy <-> ROS message conversion: round trips, strides, stamps and clear errors."""
import numpy as np
import pytest
from sensor_msgs.msg import JointState

from robot_rl.ros import convert


@pytest.mark.parametrize("encoding, shape, dtype", [
    ("rgb8", (48, 64, 3), np.uint8),
    ("mono8", (48, 64), np.uint8),
    ("16UC1", (48, 64), np.uint16),
    ("32FC1", (4, 4), np.float32),
])
def test_image_round_trip(encoding, shape, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 1000).astype(dtype)
    msg = convert.image_to_msg(array, encoding, 12.25, "cam")
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (shape[0], shape[1], encoding, "cam")
    assert convert.from_time(msg.header.stamp) == pytest.approx(12.25)
    back = convert.msg_to_image(msg)
    assert back.dtype == dtype and back.shape == shape and np.array_equal(back, array)


def test_non_contiguous_input_and_padded_rows():
    array = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)[:, ::2]  # a strided view
    msg = convert.image_to_msg(array, "rgb8", 0.0)
    assert np.array_equal(convert.msg_to_image(msg), array)
    # a producer that pads rows (step > width * channels) still decodes
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :12] = array.reshape(6, 12)
    msg.step, msg.data = 20, padded.tobytes()
    assert np.array_equal(convert.msg_to_image(msg), array)


def test_big_endian_16bit():
    depth = np.array([[1, 256], [1000, 65535]], dtype=np.uint16)
    msg = convert.image_to_msg(depth, "16UC1", 0.0)
    msg.is_bigendian, msg.data = 1, depth.astype(">u2").tobytes()
    assert np.array_equal(convert.msg_to_image(msg), depth)


@pytest.mark.parametrize("array, encoding, match", [
    (np.zeros((4, 4), np.float64), "32FC1", "needs dtype float32"),
    (np.zeros((4, 4), np.uint8), "rgb8", r"needs shape \(H, W, 3\)"),
    (np.zeros((4, 4), np.uint8), "yuv422", "unsupported image encoding"),
])
def test_image_errors(array, encoding, match):
    with pytest.raises(ValueError, match=match):
        convert.image_to_msg(array, encoding, 0.0)


def test_truncated_image_message_is_rejected():
    msg = convert.image_to_msg(np.zeros((4, 4, 3), np.uint8), "rgb8", 0.0)
    msg.data = bytes(10)
    with pytest.raises(ValueError, match="inconsistent"):
        convert.msg_to_image(msg)


def test_camera_info():
    msg = convert.camera_info_msg(640, 480, 600.0, 601.0, 319.5, 239.5, stamp=3.0, frame_id="f")
    assert (msg.width, msg.height) == (640, 480)
    assert list(msg.k) == [600.0, 0.0, 319.5, 0.0, 601.0, 239.5, 0.0, 0.0, 1.0]
    assert msg.p[0] == 600.0 and msg.p[5] == 601.0 and len(msg.d) == 5


def test_joint_state_reordered_by_name():
    names = ["a", "b", "c"]
    msg = convert.joint_state_msg(["c", "a", "b"], [3.0, 1.0, 2.0], stamp=1.5)
    assert np.array_equal(convert.joint_positions_from_msg(msg, names), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("msg_names, positions, match", [
    (["a", "b", "x"], [0.0, 0.0, 0.0], r"unknown joints \['x'\]; missing joints \['c'\]"),
    (["a", "b"], [0.0, 0.0], r"missing joints \['c'\]"),
    (["a", "b", "c"], [0.0, float("nan"), 0.0], r"non-finite position for joints \['b'\]"),
    (["a", "b", "c"], [0.0, 0.0], "3 joint names but 2 positions"),
])
def test_joint_state_errors(msg_names, positions, match):
    msg = JointState(name=msg_names, position=positions)
    with pytest.raises(ValueError, match=match):
        convert.joint_positions_from_msg(msg, ["a", "b", "c"])


def test_time_conversion_round_trip():
    for t in [0.0, 1.5, 1795260435.123456789]:
        assert convert.from_time(convert.to_time(t)) == pytest.approx(t, abs=1e-6)
