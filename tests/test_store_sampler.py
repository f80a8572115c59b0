"""Training windows from committed episodes: same windows and edge padding as diffusion_policy's
SequenceSampler (checked against a per-sample reference), never crossing episodes."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.data.sampler import SequenceSampler, split_episodes
from robot_rl.data.schema import KeySpec
from robot_rl.data.store import Store

LENGTHS = [20, 3, 17, 1, 9]


def make_data(lengths=LENGTHS):
    ends = np.cumsum(lengths)
    episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(n) for n in lengths])
    n = int(ends[-1])
    data = {
        "obs/camera": (np.arange(n)[:, None, None, None] % 251 + np.zeros((1, 6, 6, 3))).astype(np.uint8),
        "obs/joint_pos": np.stack([episode_of_row, step], 1).astype(np.float32),
        "action": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32),
    }
    return data, ends


def reference_windows(ends, window, pad_before, pad_after):
    """Per-sample reference in the style of diffusion_policy's create_indices + sample_sequence."""
    out = []
    start = 0
    for end in ends:
        n = end - start
        for idx in range(-pad_before, n - window + pad_after + 1):
            out.append([start + min(max(idx + j, 0), n - 1) for j in range(window)])
        start = end
    return out


@pytest.mark.parametrize("obs_horizon,pred_horizon,pad_before,pad_after", [(2, 16, None, None), (2, 16, 1, 7), (3, 4, 0, 0), (1, 1, 0, 0)])
def test_matches_reference_windows(obs_horizon, pred_horizon, pad_before, pad_after):
    data, ends = make_data()
    sampler = SequenceSampler(data, ends, obs_keys=["obs/camera", "obs/joint_pos"], action_keys=["action"],
                              obs_horizon=obs_horizon, pred_horizon=pred_horizon, pad_before=pad_before, pad_after=pad_after)
    ref = reference_windows(ends, max(obs_horizon, pred_horizon), sampler.pad_before, sampler.pad_after)
    assert len(sampler) == len(ref) > 0
    batch = sampler.get(np.arange(len(sampler)))
    rows = np.array(ref)
    assert batch["obs/camera"].dtype == np.uint8
    assert batch["obs/camera"].shape == (len(ref), obs_horizon, 6, 6, 3)
    assert batch["action"].shape == (len(ref), pred_horizon, 2)
    np.testing.assert_array_equal(batch["obs/camera"], data["obs/camera"][rows[:, :obs_horizon]])
    np.testing.assert_array_equal(batch["obs/joint_pos"], data["obs/joint_pos"][rows[:, :obs_horizon]])
    np.testing.assert_array_equal(batch["action"], data["action"][rows[:, :pred_horizon]])
    # windows never mix episodes
    episode_ids = batch["obs/joint_pos"][..., 0]
    assert (episode_ids == episode_ids[:, :1]).all()


def test_padding_repeats_edges_and_is_flagged():
    data, ends = make_data([10])
    sampler = SequenceSampler(data, ends, obs_keys=["obs/joint_pos"], action_keys=["action"], obs_horizon=2,
                              pred_horizon=6, pad_after=3)
    first = sampler[0]
    assert first["obs/joint_pos"][:, 1].tolist() == [0, 0]  # step -1 repeats step 0
    assert first["action"][:, 0].tolist() == [0, 0, 1, 2, 3, 4]
    assert first["action_is_pad"].tolist() == [True] + [False] * 5
    last = sampler[len(sampler) - 1]
    assert last["action"][:, 0].tolist() == [7, 8, 9, 9, 9, 9]
    assert last["action_is_pad"].tolist() == [False] * 3 + [True] * 3


def test_episode_subset_and_sampling():
    data, ends = make_data()
    sampler = SequenceSampler(data, ends, obs_keys=["obs/joint_pos"], action_keys=["action"], obs_horizon=2,
                              pred_horizon=4, episodes=[0, 2])
    batch = sampler.sample(512, np.random.default_rng(0))
    assert set(np.unique(batch["obs/joint_pos"][..., 0]).tolist()) == {0.0, 2.0}
    empty = SequenceSampler(data, ends, obs_keys=["obs/joint_pos"], action_keys=["action"], obs_horizon=1,
                            pred_horizon=5, pad_before=0, pad_after=0, episodes=[1, 3])
    assert len(empty) == 0
    with pytest.raises(ValueError, match="no windows"):
        empty.sample(4)
    with pytest.raises(KeyError, match="nope"):
        SequenceSampler(data, ends, obs_keys=["nope"], action_keys=["action"])


def test_from_a_store(tmp_path):
    data, ends = make_data()
    keys = {k: KeySpec(v.shape[1:], v.dtype.name) for k, v in data.items()}
    with Store.create(tmp_path / "s.zarr", keys=keys, attrs={"control_rate_hz": 10.0}, durable=False) as store:
        start = 0
        for end in ends:
            store.append_episode({k: v[start:end] for k, v in data.items()}, source="demo", success=True,
                                 start_time=0.0, health={})
            start = end
    loaded = Store.open(tmp_path / "s.zarr").load()
    sampler = SequenceSampler(loaded, loaded["episode_ends"], obs_keys=["obs/camera"], action_keys=["action"])
    direct = SequenceSampler(data, ends, obs_keys=["obs/camera"], action_keys=["action"])
    windows = np.arange(len(direct))
    for k, v in direct.get(windows).items():
        np.testing.assert_array_equal(sampler.get(windows)[k], v)


def test_split_episodes():
    train, val = split_episodes(10, 0.2, seed=1)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_episodes(1, 0.5) == ([0], [])
