"""The recorder core without ROS: aligned steps, start gate, health flags, sparse reward, layouts."""
import numpy as np
import pytest

from robot_rl.config import load_profile
from robot_rl.data.episode_writer import EpisodeWriter
from robot_rl.data.recording import Recording, open_or_create, store_layout
from robot_rl.data.schema import StoreError
from robot_rl.data.store import Store
from robot_rl.data.store_check import check

PROFILE = load_profile("sim")
N = len(PROFILE.robot.joints)


def feed(rec: Recording, t0: float, t1: float, action_from: float | None = None):
    """Synthetic streams at their profile rates between t0 and t1 (values encode their stamp)."""
    def times(rate):  # sample instants in (t0, t1]
        return np.arange(np.floor(t0 * rate + 1e-9) + 1, np.floor(t1 * rate + 1e-9) + 1) / rate

    for t in times(PROFILE.robot.state_rate_hz):
        rec.add_joint_state(t, np.full(N, t), np.zeros(N))
    for cam in PROFILE.cameras:
        for t in times(cam.fps):
            rec.add_image("color", cam.name, t, np.full((cam.height, cam.width, 3), int(t * 10) % 255, np.uint8))
    for tac in PROFILE.tactile:
        for t in times(tac.rate_hz):
            rec.add_tactile(tac.name, t, np.full((tac.rows, tac.cols), t, np.float32))
    if action_from is not None:
        for t in times(PROFILE.robot.control_rate_hz):
            if t >= action_from:
                rec.add_command(t, np.full(N, -t))


@pytest.fixture
def recording(tmp_path):
    store = open_or_create(tmp_path / "s.zarr", PROFILE)
    writer = EpisodeWriter(store, background=False)
    yield Recording(PROFILE, writer), store
    writer.close()
    store.close()


def test_steps_are_as_of_joins_without_future_samples(recording):
    rec, store = recording
    feed(rec, -0.2, 0.2, action_from=-0.2)
    assert rec.stale_streams(0.2) == {}
    rec.start()
    ticks = np.round(np.arange(0.2, 1.0, 0.1), 6)
    for t in ticks:  # online: samples up to t have arrived (plus some newer ones), then the tick
        feed(rec, t - 0.1, t + 0.03, action_from=-1)
        assert rec.tick(t)
    rec.label(True)
    index, health = rec.stop()
    ep = store.read_episode(index)
    assert len(ep["stamp"]) == len(ticks)
    # every recorded sample is the newest at or before its tick, never later
    assert np.all(ep["obs/joint_pos"][:, 0] <= ep["stamp"] + 1e-6)  # float32 stamps
    assert np.all(ep["stamp"] - ep["obs/joint_pos"][:, 0] < 0.011)
    assert np.all(-ep["action"][:, 0] <= ep["stamp"] + 1e-6)
    assert ep["reward"].tolist() == [0.0] * (len(ticks) - 1) + [1.0]
    assert store.episodes_meta()[index]["success"] and health["ok"]
    # all-zero arrays (a demo's residual) still have their chunk files: the deep check passes
    assert not ep["residual"].any() and check(store.path, deep=True) == []


def test_start_gate_names_stale_streams(recording):
    rec, _ = recording
    feed(rec, 0.0, 1.0)
    problems = rec.stale_streams(2.0)  # nothing newer than t=1.0
    assert set(problems) == {"joint_state", "color/front", "color/wrist", "tactile/left_finger", "tactile/right_finger"}
    assert all("stale" in p for p in problems.values())
    assert rec.stale_streams(1.0) == {}
    assert set(rec.stale_streams(1.0, commands=True)) == {"action"}  # teleop: no command heard yet
    feed(rec, 1.0, 1.1, action_from=1.0)
    assert rec.stale_streams(1.1, commands=True) == {}


def test_invalid_ticks_and_gaps_flag_the_episode(recording):
    rec, store = recording
    feed(rec, -0.1, 0.1, action_from=-0.1)
    rec.start()
    for t in np.round(np.arange(0.1, 1.0, 0.1), 6):
        feed(rec, t - 0.1, t, action_from=-1)
        assert rec.tick(t)
    for t in np.arange(1.5, 2.0, 0.1):  # streams stopped at t=1.0
        assert not rec.tick(t)
    index, health = rec.stop()
    assert not health["ok"] and health["invalid_ticks"] == 5
    assert any("invalid ticks" in p for p in health["problems"])
    assert store.episodes_meta()[index]["health"]["ok"] is False


def test_episode_without_valid_steps_is_refused_and_nothing_is_written(recording):
    rec, store = recording
    rec.start()
    assert not rec.tick(5.0)
    with pytest.raises(StoreError, match="no valid step"):
        rec.stop()
    assert store.n_episodes == 0 and not rec.recording


def test_dropped_camera_frames_are_counted(recording):
    rec, store = recording
    rec.start()
    for t in [0.0, 1 / 30, 4 / 30, 5 / 30]:  # frames 2 and 3 missing
        rec.add_image("color", "front", t, np.zeros((128, 128, 3), np.uint8))
    assert rec.health.dropped_frames == {"front": 2}


def test_store_layout_and_mismatch_refused(tmp_path):
    keys, attrs = store_layout(PROFILE)
    assert keys["obs/camera_front"].shape == (128, 128, 3) and keys["obs/tactile_left_finger"].shape == (4, 4)
    assert attrs["action"]["joint_names"] == PROFILE.robot.joint_names
    other = load_profile("sim")
    other.cameras = other.cameras[:1]
    open_or_create(tmp_path / "s.zarr", PROFILE).close()
    with pytest.raises(StoreError, match="different setup"):
        open_or_create(tmp_path / "s.zarr", other)
    assert Store.open(tmp_path / "s.zarr").n_episodes == 0


def test_rollout_ticks_on_policy_stamps_with_base_and_residual(recording):
    rec, store = recording
    feed(rec, -0.2, 0.1)
    rec.start(source="rollout", base_ckpt="abc123")
    t = 0.1
    base, residual = np.full(N, 0.5), np.full(N, 0.01)
    assert rec.add_policy_output("residual", t, residual) is None
    assert rec.add_policy_output("base_action", t, base) is None
    assert rec.add_policy_output("action", t, base + residual) is None
    complete = rec.add_policy_output("chunk_phase", t, np.array([5.0]))  # any arrival order
    assert complete is not None and rec.tick(t, complete)
    rec.label(False)
    index, _ = rec.stop()
    ep = store.read_episode(index)
    assert np.allclose(ep["base_action"][0], 0.5) and np.allclose(ep["residual"][0], 0.01)
    assert np.allclose(ep["action"][0], 0.51) and ep["chunk_phase"][0] == 5
    meta = store.episodes_meta()[index]
    assert meta["source"] == "rollout" and meta["base_ckpt"] == "abc123"


def test_a_store_from_before_chunk_phases_keeps_recording_without_them(tmp_path):
    keys, attrs = store_layout(PROFILE)
    del keys["chunk_phase"]
    Store.create(tmp_path / "old.zarr", keys=keys, attrs=attrs).close()
    store = open_or_create(tmp_path / "old.zarr", PROFILE)  # no "keys differ" for the optional key
    writer = EpisodeWriter(store, background=False)
    rec = Recording(PROFILE, writer)
    assert not rec.records_phase
    feed(rec, -0.2, 0.1, action_from=-0.2)
    rec.start(source="demo")
    assert rec.tick(0.1)
    rec.label(True)
    index, _ = rec.stop()
    assert "chunk_phase" not in store.read_episode(index)
    store.close()


def test_demo_ticks_record_no_chunk_phase(recording):
    rec, store = recording
    feed(rec, -0.2, 0.1, action_from=-0.2)
    rec.start(source="demo")
    assert rec.tick(0.1)
    rec.label(True)
    index, _ = rec.stop()
    assert store.read_episode(index)["chunk_phase"].tolist() == [-1]


def step(rec: Recording, t: float, cameras: bool = True) -> None:
    """One lockstep sim step: every stream sampled once at t (values encode t)."""
    rec.add_joint_state(t, np.full(N, t), np.zeros(N))
    for tac in PROFILE.tactile:
        rec.add_tactile(tac.name, t, np.full((tac.rows, tac.cols), t, np.float32))
    for cam in PROFILE.cameras if cameras else []:
        rec.add_image("color", cam.name, t, np.full((cam.height, cam.width, 3), round(t * 10), np.uint8))


def test_lockstep_teleop_records_each_commanded_step_once_its_images_arrive(tmp_path):
    store = open_or_create(tmp_path / "s.zarr", PROFILE)
    writer = EpisodeWriter(store, background=False)
    rec = Recording(PROFILE, writer, frames_per_tick=True)
    step(rec, 0.0)
    rec.start()
    # step 1: the small command overtakes the camera images of its step: nothing recorded yet
    step(rec, 0.1, cameras=False)
    rec.add_step_command(0.1, np.full(N, -0.1))
    assert rec.health.ticks == 0
    for cam in PROFILE.cameras:
        rec.add_image("color", cam.name, 0.1, np.full((cam.height, cam.width, 3), 1, np.uint8))
    assert rec.health.ticks == 1
    rec.add_step_command(0.1, np.full(N, -0.1))  # the teleop re-sent the step after a stall: not twice
    assert rec.health.ticks == 1
    # steps 2..6: a camera frame of step 2 never arrives; the step is recorded once 3 more are commanded
    for k in range(2, 7):
        t = round(0.1 * k, 6)
        step(rec, t, cameras=k != 2)
        rec.add_step_command(t, np.full(N, -t))
    rec.label(True)
    index, health = rec.stop()
    writer.close()
    ep = store.read_episode(index)
    assert np.allclose(ep["stamp"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6][: len(ep["stamp"])])
    assert np.allclose(ep["action"][:, 0], -ep["stamp"])  # each step carries the command that acted on it
    assert np.allclose(ep["obs/joint_pos"][:, 0], ep["stamp"])
    assert ep["obs/camera_front"][0].max() == 1  # step 1's own image, not step 0's
    assert ep["obs/camera_front"][1].max() == 1  # step 2: its frame was lost, the newest before it stands in
    assert health["ticks"] == 6 and health["ok"] and health["dropped_frames"] == {"front": 1, "wrist": 1}
    store.close()
