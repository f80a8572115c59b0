"""Time offsets: a camera delay injected in the sim driver (images show the scene `camera_delay_s`
before their stamp) is recovered within one frame period from a wrist wiggle; the offsets file turns
into per-stream stamp corrections for the as-of aligner."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robot_rl.calibration.files import CalibrationError  # noqa: E402
from robot_rl.calibration.time_offset import (  # noqa: E402
    estimate_camera_latency, estimate_signal_latency, load_latencies, stamp_corrections, time_offsets_path,
    wiggle_schedule, write_time_offsets,
)
from robot_rl.config import ConfigError, load_profile  # noqa: E402
from robot_rl.config.nodes import SimRobotParams  # noqa: E402
from robot_rl.data.align import AsOfAligner  # noqa: E402
from robot_rl.data.recording import stream_max_ages  # noqa: E402
from robot_rl.sim.driver import SimDriver  # noqa: E402

pytestmark = pytest.mark.timeout(120)
PROFILE = load_profile("sim")
NAMES = PROFILE.robot.joint_names
CENTER = np.array([0.0, 0.2, 0.3, 1.0, 0.0, 0.04])
WIGGLE = {NAMES.index("elbow"): 0.2, NAMES.index("wrist_pitch"): 0.4, NAMES.index("wrist_roll"): 0.6}


def record_wiggle(delay: float, seconds: float = 6.0):
    """Drive the sim driver (its safety envelope included) through a wiggle; every sample as stamped."""
    driver = SimDriver(PROFILE, SimRobotParams(camera_delay_s=delay, clock="realtime"), stamp_origin=1000.0)
    lower, upper = [j.lower for j in PROFILE.robot.joints], [j.upper for j in PROFILE.robot.joints]
    plan = wiggle_schedule(CENTER, lower, upper, WIGGLE, seconds, PROFILE.robot.control_rate_hz, seed=3)
    joints, frames = [], {c.name: [] for c in PROFILE.cameras}
    try:
        for _ in range(20):  # 2 s to reach the centre pose and let the cube settle, not recorded
            driver.command(CENTER)
            driver.advance(driver.steps_per_control)
        for target in plan:
            driver.command(target)
            for s in driver.advance(driver.steps_per_control):
                if s.kind == "joint_state":
                    joints.append((s.stamp, s.value[0]))
                elif s.kind == "color":
                    frames[s.name].append((s.stamp, s.value))
    finally:
        driver.close()
    js = np.array([t for t, _ in joints])
    q = np.array([v for _, v in joints])
    return js, q, {c: (np.array([t for t, _ in f]), np.array([v for _, v in f])) for c, f in frames.items()}


@pytest.mark.parametrize("delay", [0.1, 0.0])
def test_injected_camera_delay_is_recovered_within_a_frame(delay):
    js, q, frames = record_wiggle(delay)
    for cam in PROFILE.cameras:
        stamps, images = frames[cam.name]
        est = estimate_camera_latency(f"camera/{cam.name}", js, q, stamps, images)
        print(f"\ninjected {delay * 1e3:.0f} ms: {est.summary()}, error {(est.latency_s - delay) * 1e3:+.1f} ms")
        assert abs(est.latency_s - delay) < 1.0 / cam.fps
        assert est.correlation > 0.6


def test_no_motion_unrelated_images_or_no_overlap_fail_with_advice():
    js = np.arange(0, 4, 0.01)
    q = np.tile(CENTER, (len(js), 1))
    fs = np.arange(0, 4, 1 / 30)
    still = np.full((len(fs), 32, 32, 3), 90, np.uint8)
    with pytest.raises(CalibrationError, match="no motion in the recording; move the arm"):
        estimate_camera_latency("camera/wrist", js, q, fs, still)
    q = q + np.sin(js)[:, None] * 0.3  # the arm moves, but the images show something unrelated
    noise = np.random.default_rng(0).integers(0, 255, still.shape, np.uint8)
    with pytest.raises(CalibrationError, match="hardly correlate.*make the motion larger and visible"):
        estimate_camera_latency("camera/wrist", js, q, fs, noise)
    with pytest.raises(CalibrationError, match="record longer"):
        estimate_camera_latency("camera/wrist", js[:5], q[:5], fs, noise)


def test_signal_latency_for_tactile_streams():
    """Tactile total vs gripper effort: a delayed, noisy, rescaled copy is matched to the millisecond."""
    rng = np.random.default_rng(0)
    t = np.arange(0, 8, 0.01)  # joint states at 100 Hz
    effort = np.convolve(rng.random(len(t)) > 0.97, np.ones(25), "same").astype(float)  # squeezes
    ts = np.arange(0.003, 8, 0.005)  # tactile at 200 Hz
    tactile = 3.0 * np.interp(ts - 0.042, t, effort) + rng.normal(0, 0.05, len(ts))
    est = estimate_signal_latency("tactile/left_finger", t, effort, ts, tactile)
    assert est.latency_s == pytest.approx(0.042, abs=0.003) and est.correlation > 0.9
    with pytest.raises(CalibrationError, match="hardly correlate"):
        estimate_signal_latency("tactile/left_finger", t, effort, ts, rng.normal(0, 1, len(ts)), max_lag_s=0.2)


def test_offsets_file_and_stamp_corrections(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path))
    assert load_latencies("sim") == {}
    assert set(stamp_corrections(PROFILE).values()) == {0.0}
    from robot_rl.calibration.time_offset import LatencyEstimate

    write_time_offsets("sim", [LatencyEstimate("camera/front", 0.1, 0.9, 150)])
    write_time_offsets("sim", [LatencyEstimate("tactile/left_finger", 0.02, 0.95, 800)])  # merges
    assert load_latencies("sim") == {"camera/front": 0.1, "tactile/left_finger": 0.02}
    corr = stamp_corrections(PROFILE)
    assert set(corr) == set(stream_max_ages(PROFILE, record_depth=True)) - {"action"}  # the aligner's sensor streams
    assert corr["color/front"] == corr["depth/front"] == -0.1 and corr["tactile/left_finger"] == -0.02
    assert corr["color/wrist"] == 0.0 and corr["joint_state"] == 0.0

    # applied before AsOfAligner.add: a frame stamped 10.10 that shows 10.00 is chosen at t = 10.05
    aligner = AsOfAligner({"color/front": 0.2})
    aligner.add("color/front", 10.10 + corr["color/front"], "frame")
    assert aligner.observe(10.05).valid

    path = time_offsets_path("sim")
    path.write_text(path.read_text().replace("camera/front: 0.1", "camera/front: 5.0"))
    with pytest.raises(ConfigError, match="implausible"):
        load_latencies("sim")
