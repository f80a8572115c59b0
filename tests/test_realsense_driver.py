"""The RealSense driver on real pyrealsense2 frames from an `rs.software_device` (no camera needed):
encodings, aligned depth in mm, capture stamps, intrinsics -> CameraInfo, drop counting,
calibration-file override, the missing-serial error, and retry with back-off after loss."""
import rclpy  # noqa: F401  # isort: skip  (before pyrealsense2: see robot_rl/drivers/realsense/__init__.py)

import itertools
import subprocess
import sys
import threading
import time

import numpy as np
import pyrealsense2 as rs
import pytest

from robot_rl.config import CameraSpec, ConfigError
from robot_rl.drivers.realsense import (
    CameraError, DeviceInfo, DeviceNotFound, FrameConverter, Intrinsics, RealSenseCamera, StampClock,
    backoff_delays, calibration_path, find_device, load_calibration, open_session,
)
from robot_rl.drivers.realsense.device import configure_sensors
from robot_rl.drivers.realsense.camera import STREAMING, WAITING
from robot_rl.ros import convert

pytestmark = pytest.mark.timeout(120)
T0_MS = 1_700_000_000_000.0  # global-time stamps are host epoch ms
DEPTH_UNITS = 0.0001  # 100 µm per raw unit, so mm conversion is not the identity


class SoftwareCamera:
    """A color + depth `rs.software_device` with known intrinsics, frames pushed with `on_video_frame`.

    Color and depth have different intrinsics (as on a D435), so alignment really reprojects.
    Frame k has a known picture and a uniform depth of 1000 + 10 k mm.
    """

    def __init__(self, width=64, height=48, fps=30, serial="812112345678"):
        self.width, self.height, self.fps = width, height, fps
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.depth_sensor = self.device.add_sensor("Stereo Module")
        self.color_sensor = self.device.add_sensor("RGB Camera")
        self.depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS)
        self.color_intr = self._intrinsics(0.9 * width, 0.92 * width, width / 2 - 0.5, height / 2 + 0.25, [0.1, -0.05, 0.001, 0.002, 0.01])
        # a narrower depth field of view: aligned depth leaves a border of holes the raw depth lacks
        self.depth_intr = self._intrinsics(1.2 * width, 1.2 * width, width / 2, height / 2, [0, 0, 0, 0, 0])
        self.depth_profile = self._stream(self.depth_sensor, rs.stream.depth, rs.format.z16, 2, self.depth_intr, 0)
        self.color_profile = self._stream(self.color_sensor, rs.stream.color, rs.format.rgb8, 3, self.color_intr, 1)
        extrinsics = rs.extrinsics()
        extrinsics.rotation, extrinsics.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0.0, 0.0, 0.0]
        self.depth_profile.register_extrinsics_to(self.color_profile, extrinsics)
        self.device.create_matcher(rs.matchers.dlr_c)

    def _intrinsics(self, fx, fy, cx, cy, coeffs):
        i = rs.intrinsics()
        i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = self.width, self.height, fx, fy, cx, cy
        i.model, i.coeffs = rs.distortion.brown_conrady, coeffs
        return i

    def _stream(self, sensor, kind, fmt, bpp, intrinsics, uid):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            kind, 0, uid, self.width, self.height, self.fps, bpp, fmt)
        vs.intrinsics = intrinsics
        return sensor.add_video_stream(vs).as_video_stream_profile()

    def start(self, sink=None):
        self.sink = sink or rs.syncer()
        for sensor, profile in ((self.depth_sensor, self.depth_profile), (self.color_sensor, self.color_profile)):
            sensor.open(profile)
            sensor.start(self.sink)
        return self

    def stop(self):
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.stop()
            sensor.close()

    def color_image(self, k):
        y, x = np.mgrid[0:self.height, 0:self.width]
        return np.stack([(x * 3) % 256, (y * 5) % 256, np.full_like(x, k % 256)], axis=-1).astype(np.uint8)

    def depth_mm(self, k):
        return 1000 + 10 * k

    def stamp_ms(self, k):
        return T0_MS + k * 1000.0 / self.fps

    def push(self, k, number=None, ts_ms=None, domain=rs.timestamp_domain.global_time, depth_ts_ms=None):
        number = k + 1 if number is None else number
        ts_ms = self.stamp_ms(k) if ts_ms is None else ts_ms
        raw = np.full((self.height, self.width), round(self.depth_mm(k) / (DEPTH_UNITS * 1000)), np.uint16)
        for sensor, profile, pixels, bpp, ts in (
                (self.depth_sensor, self.depth_profile, raw, 2, ts_ms if depth_ts_ms is None else depth_ts_ms),
                (self.color_sensor, self.color_profile, self.color_image(k), 3, ts_ms)):
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride, f.timestamp, f.domain, f.frame_number, f.profile = (
                pixels, bpp, self.width * bpp, ts, domain, number, profile)
            if bpp == 2:
                f.depth_units = DEPTH_UNITS
            sensor.on_video_frame(f)

    def frameset(self, k, **kw):
        """Push frame k and return the syncer's frameset holding its color frame."""
        self.push(k, **kw)
        number = kw.get("number", k + 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ok, fs = self.sink.try_wait_for_frames(1000)
            if ok and fs.get_color_frame() and fs.get_color_frame().get_frame_number() == number:
                return fs
        raise AssertionError(f"syncer never delivered color frame {number}")


@pytest.fixture
def cam():
    c = SoftwareCamera().start()
    yield c
    c.stop()


def converter_for(cam, intrinsics=None):
    return FrameConverter(intrinsics or Intrinsics.from_rs(cam.color_intr), cam.fps, depth=True,
                          depth_scale=DEPTH_UNITS)


def complete_frame(cam, conv, k):
    """Frame k converted, pushing again (new k) until the syncer pairs depth with color."""
    for kk in range(k, k + 5):
        frame = conv.convert(cam.frameset(kk))
        if frame.depth is not None:
            return kk, frame
    raise AssertionError("syncer never paired depth with color")


def test_color_depth_encodings_units_and_stamps(cam):
    conv = converter_for(cam)
    k, frame = complete_frame(cam, conv, 0)
    assert frame.color.dtype == np.uint8 and frame.color.shape == (cam.height, cam.width, 3)
    assert np.array_equal(frame.color, cam.color_image(k))
    assert frame.depth.dtype == np.uint16 and frame.depth.shape == (cam.height, cam.width)  # aligned to color
    valid = frame.depth[frame.depth > 0]
    assert np.all(valid == cam.depth_mm(k))  # raw 0.1 mm units -> mm
    # aligned to color: the depth camera's narrower view covers fx_color / fx_depth of the color image
    rows, cols = np.nonzero(frame.depth)
    assert cols.max() - cols.min() + 1 == pytest.approx(cam.width * cam.color_intr.fx / cam.depth_intr.fx, abs=2)
    assert rows.max() - rows.min() + 1 == pytest.approx(cam.height * cam.color_intr.fy / cam.depth_intr.fy, abs=2)
    assert frame.depth[cam.height // 2, cam.width // 2] > 0 and frame.depth[0, 0] == 0
    assert frame.stamp == pytest.approx(cam.stamp_ms(k) / 1000.0, abs=1e-6)  # capture time, not now
    assert frame.frame_number == k + 1
    # the converter owns its arrays: frames returned to librealsense's pool do not change them
    before = frame.color.copy()
    for kk in range(k + 1, k + 4):
        conv.convert(cam.frameset(kk))
    assert np.array_equal(frame.color, before)
    # Publishable as ROS images as they are
    msg = convert.image_to_msg(frame.depth, "16UC1", frame.stamp)
    assert convert.from_time(msg.header.stamp) == pytest.approx(frame.stamp, abs=1e-6)


def test_intrinsics_from_the_stream_profile_become_camera_info(cam):
    conv = converter_for(cam)
    _, frame = complete_frame(cam, conv, 0)
    # what the driver reads from a running stream's profile
    intr = Intrinsics.from_rs(cam.frameset(9).get_color_frame().profile.as_video_stream_profile().get_intrinsics())
    assert intr == frame.intrinsics
    info = convert.camera_info_msg(**intr.camera_info_kwargs(), stamp=frame.stamp, frame_id="front_optical_frame")
    c = cam.color_intr
    assert (info.width, info.height, info.distortion_model) == (cam.width, cam.height, "plumb_bob")
    assert list(info.k) == pytest.approx([c.fx, 0, c.ppx, 0, c.fy, c.ppy, 0, 0, 1], abs=1e-4)
    assert list(info.d) == pytest.approx([0.1, -0.05, 0.001, 0.002, 0.01], abs=1e-6)


def test_frame_drops_counted_from_frame_number_gaps(cam):
    conv = converter_for(cam)
    for k, number in [(0, 1), (1, 2), (2, 3), (5, 6), (6, 7), (9, 10)]:
        assert conv.convert(cam.frameset(k, number=number)).frame_number == number
    assert conv.stats.drops == 4 and conv.stats.frames == 6
    conv.convert(cam.frameset(10, number=1))  # counter restarted (reconnect, playback loop): not a drop
    assert conv.stats.drops == 4 and conv.stats.restarts == 1


def compose(frames):
    """One frameset of exactly these frames (what a syncer emits at a playback loop's wrap)."""
    out = rs.frame_queue(2, keep_frames=True)
    block = rs.processing_block(lambda frame, source: source.frame_ready(source.allocate_composite_frame(frames)))
    block.start(out)
    block.invoke(frames[0])
    return out.wait_for_frame(5000).as_frameset()


def test_depth_far_from_its_color_frame_in_time_is_not_published():
    cam = SoftwareCamera().start(rs.frame_queue(10, keep_frames=True))  # frames one by one, no syncer
    try:
        conv = converter_for(cam)
        frames = {}
        for k, depth_offset_ms in [(3, 0.0), (4, -20.0)]:  # 20 ms > half a 30 fps period
            cam.push(k, depth_ts_ms=cam.stamp_ms(k) + depth_offset_ms)
            for _ in range(2):
                f = cam.sink.wait_for_frame(5000)
                frames[f.profile.stream_type()] = f
            frame = conv.convert(compose([frames[rs.stream.depth], frames[rs.stream.color]]))
            assert frame.frame_number == k + 1
            assert (frame.depth is None) == (depth_offset_ms != 0.0)
        assert conv.stats.unpaired_depth == 1
    finally:
        cam.stop()


def test_hardware_clock_stamps_mapped_to_host_time_by_least_delayed_arrival(cam):
    # host arrivals 10, 4, 20 and 13 ms after capture; device clock = host clock - 1000 s
    host = iter([1000 + k / 30 + late for k, late in [(0, 0.010), (1, 0.004), (2, 0.020), (5, 0.013)]])
    conv = converter_for(cam)
    conv.clock = StampClock(now=lambda: next(host))
    stamps = [conv.convert(cam.frameset(k, ts_ms=k * 1000 / 30, domain=rs.timestamp_domain.hardware_clock)).stamp
              for k in range(3)]
    stamps.append(conv.convert(cam.frameset(5, ts_ms=5 * 1000 / 30, domain=rs.timestamp_domain.hardware_clock)).stamp)
    assert stamps[0] == pytest.approx(1000.010, abs=1e-6)
    assert stamps[1:] == pytest.approx([1000.004 + k / 30 for k in (1, 2, 5)], abs=1e-6)  # capture, not arrival


def write_calibration(root, fx=50.0, width=64, height=48):
    path = root / "testbench" / "front.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"width: {width}", f"height: {height}",
             f"camera_matrix: [[{fx}, 0, 31.7], [0, 51.5, 24.2], [0, 0, 1]]",
             "distortion_coefficients: [0.01, -0.02, 0.0, 0.0, 0.003]",
             "distortion_model: plumb_bob"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibration_file_overrides_device_intrinsics(cam, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    assert load_calibration("testbench", "front", 64, 48) is None  # no file: device intrinsics
    path = write_calibration(tmp_path)
    assert calibration_path("testbench", "front") == path
    calib = load_calibration("testbench", "front", 64, 48)
    assert calib.source == str(path)

    # through the whole camera loop: the session reports device intrinsics, the calibration wins
    camera = RealSenseCamera(spec(), calibration=calib, opener=lambda: SoftwareSession(cam, frames=3),
                             retry_min_s=0.01, stall_periods=3)
    frames = run_until(camera, lambda got: len(got) >= 3)
    assert frames[0].intrinsics == calib
    info = convert.camera_info_msg(**frames[0].intrinsics.camera_info_kwargs())
    assert list(info.k) == pytest.approx([50.0, 0, 31.7, 0, 51.5, 24.2, 0, 0, 1])
    assert list(info.d) == pytest.approx([0.01, -0.02, 0.0, 0.0, 0.003])


@pytest.mark.parametrize("content, problem", [
    ({"width": 640}, "calibrated at 640x48 but camera 'front' streams at 64x48"),
    ({"extra": ["distortion_coefficients: [0.1, 0.2]"]}, "distortion_coefficients: plumb_bob needs 5 coefficients"),
])
def test_bad_calibration_file_is_a_clear_config_error(tmp_path, monkeypatch, content, problem):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    path = write_calibration(tmp_path, width=content.get("width", 64))
    if "extra" in content:
        path.write_text(path.read_text().replace("distortion_coefficients: [0.01, -0.02, 0.0, 0.0, 0.003]",
                                                 content["extra"][0]))
    with pytest.raises(ConfigError) as err:
        load_calibration("testbench", "front", 64, 48)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_missing_serial_names_it_and_lists_connected_serials():
    with pytest.raises(DeviceNotFound) as err:
        find_device("123456789012")  # rs.context().query_devices() is empty here
    assert "'123456789012' is not connected" in str(err.value) and "connected devices: none" in str(err.value)
    with pytest.raises(DeviceNotFound) as err:  # the live open path raises the same error
        open_session(spec(serial="123456789012"))
    assert "123456789012" in str(err.value)
    listed = str(DeviceNotFound("123456789012", [DeviceInfo("Intel RealSense D435", "817612070001", "5.16.0.1"),
                                                 DeviceInfo("Intel RealSense D405", "230322270002")]))
    assert "817612070001" in listed and "230322270002" in listed and "D435" in listed


def options_of(sensor, *options):
    return [sensor.get_option(o) for o in options]


def option_range(lo, hi, step, default):
    """By attribute: rs.option_range(a, b, c, d) fills (min, max, default, step), not what its signature says."""
    r = rs.option_range()
    r.min, r.max, r.step, r.default = lo, hi, step, default
    return r


@pytest.mark.parametrize("auto", [False, True])
def test_exposure_and_white_balance_fixed_from_the_profile_unless_auto(auto):
    cam = SoftwareCamera()
    for sensor in (cam.color_sensor, cam.depth_sensor):
        sensor.add_option(rs.option.global_time_enabled, option_range(0, 1, 1, 0), True)
    for option, r in [(rs.option.enable_auto_exposure, (0, 1, 1, 1)), (rs.option.exposure, (1, 10000, 1, 156)),
                      (rs.option.enable_auto_white_balance, (0, 1, 1, 1)), (rs.option.white_balance, (2800, 6500, 10, 4600))]:
        cam.color_sensor.add_option(option, option_range(*r), True)
    cam.color_sensor.set_option(rs.option.white_balance, 3000)
    warnings = []
    configure_sensors(cam.device, spec(auto_exposure=auto, auto_white_balance=auto, exposure_us=8000.0,
                                       white_balance_k=5200.0), lambda level, msg: warnings.append(msg))
    assert options_of(cam.depth_sensor, rs.option.global_time_enabled) == [1]
    assert options_of(cam.color_sensor, rs.option.global_time_enabled) == [1]
    got = options_of(cam.color_sensor, rs.option.enable_auto_exposure, rs.option.exposure,
                     rs.option.enable_auto_white_balance, rs.option.white_balance)
    # the D400 RGB sensor counts exposure in 100 µs units
    assert got == ([1, 156, 1, 3000] if auto else [0, 80, 0, 5200]) and not warnings
    configure_sensors(cam.device, spec(exposure_us=5_000_000.0), lambda level, msg: warnings.append(msg))
    assert options_of(cam.color_sensor, rs.option.exposure) == [10000] and "outside the sensor's range" in warnings[0]


def test_backoff_doubles_up_to_the_cap():
    assert list(itertools.islice(backoff_delays(0.5, 10.0), 8)) == [0.5, 1, 2, 4, 8, 10, 10, 10]


def spec(**kw):
    return CameraSpec(**{"name": "front", "width": 64, "height": 48, "fps": 30.0, "depth": True, **kw})


class SoftwareSession:
    """Stands in for an open pipeline: the software device yields `frames` frames, then goes silent."""

    def __init__(self, cam, frames, first=1):
        self.cam, self.left, self.k = cam, frames, first - 1
        self.device = DeviceInfo("Software RealSense", "812112345678")
        self.intrinsics, self.depth_scale = Intrinsics.from_rs(cam.color_intr), DEPTH_UNITS

    def read(self, timeout_s):
        if self.left <= 0:
            time.sleep(timeout_s)  # a device that stopped sending
            return None
        self.left -= 1
        self.k += 1
        return self.cam.frameset(self.k)

    def finished(self):
        return False

    def close(self):
        pass


def run_until(camera, predicate, timeout=30.0, states=None):
    got = []

    def on_frame(frame):
        got.append(frame)
        if states is not None:
            states.append(camera.state)

    thread = threading.Thread(target=camera.run, args=(on_frame,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not predicate(got) and time.monotonic() < deadline:
        time.sleep(0.01)
    camera.stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "camera.run did not return after stop()"
    assert predicate(got), f"condition not reached; camera state {camera.diagnostics()}"
    return got


def test_missing_device_then_loss_retries_until_it_returns(cam):
    """Not found twice, then 3 frames and silence (loss), then found again: the loop never gives up."""
    opens = iter([DeviceNotFound("812112345678", []), DeviceNotFound("812112345678", []),
                  SoftwareSession(cam, 3), CameraError("USB reset"), SoftwareSession(cam, 100, first=10)])
    logs, states = [], []

    def opener():
        item = next(opens)
        if isinstance(item, Exception):
            raise item
        return item

    camera = RealSenseCamera(spec(), opener=opener, retry_min_s=0.01, retry_max_s=0.05, stall_periods=3,
                             log=lambda level, msg: (logs.append((level, msg)), states.append(camera.state)))
    got = run_until(camera, lambda got: len(got) >= 8, states=states)
    errors = [m for lvl, m in logs if lvl == "error"]
    assert "serial '812112345678' is not connected" in errors[0] and "retrying in" in errors[0]
    assert any("no frames for" in m for m in errors) and any("USB reset" in m for m in errors)
    assert camera.retries == 4 and WAITING in states and STREAMING in states
    assert [f.frame_number for f in got] == [2, 3, 4] + list(range(11, 11 + len(got) - 3))  # number = k + 1
    assert camera.converter.stats.drops == 0  # counters restart with each session


def test_real_open_path_keeps_retrying_a_missing_serial():
    logs = []
    camera = RealSenseCamera(spec(serial="000011112222"), retry_min_s=0.01, retry_max_s=0.05,
                             log=lambda level, msg: logs.append(msg))
    run_until(camera, lambda got: camera.retries >= 3, timeout=30)
    assert camera.diagnostics()["state"] in (WAITING, "connecting", "stopped")
    assert all("'000011112222' is not connected" in m for m in logs)


@pytest.mark.parametrize("first, ok", [("import rclpy; import pyrealsense2", True),
                                       ("import pyrealsense2", False), ("import pyrealsense2; import rclpy", False)])
def test_ros_refuses_to_start_after_pyrealsense2_instead_of_segfaulting(first, ok):
    """In a fresh process: pyrealsense2 loaded before rclpy segfaults at exit once ROS has started
    (exit -11); robot_rl.ros catches the order at import and says what to do."""
    code = f"{first}; import robot_rl.ros.probe as p; import rclpy; rclpy.init(); rclpy.shutdown(); print('ran')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0 and "ran" in done.stdout, done.stderr
    else:
        assert done.returncode == 1 and "Put `import rclpy` first" in done.stderr, (done.returncode, done.stderr)
