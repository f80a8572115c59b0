"""Labelled frames for the reward classifier, from the store's committed episodes.

Each episode's success label and source come from the store's metadata (`episodes_meta`); frames are
labelled by `metrics.frame_labels` (last K frames of a successful episode positive). Episodes, not
frames, are split into train / validation / test, stratified by label, so no held-out number is
measured on frames of an episode the classifier trained on. Camera frames are resized to the
encoder's size once at load (`prepare_images`, as at inference) and kept in RAM as uint8.

Every input problem (no such store, another setup's store, one label missing, too few episodes)
raises `ConfigError` before anything is loaded, so the CLI answers in one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robot_rl.config.typed import ConfigError
from robot_rl.data.schema import KeySpec, StoreError
from robot_rl.data.store import Store
from robot_rl.policies.spec import default_obs_keys
from robot_rl.reward.config import RewardModelConfig, RewardTrainConfig
from robot_rl.reward.metrics import frame_labels
from robot_rl.rl.encoder import is_camera, prepare_images

MIN_PER_CLASS = 3  # one successful and one failed episode in each of train, validation and test


@dataclass
class Split:
    """Frames of some episodes, concatenated: obs {key: (N, ...)}, labels (N,), per-episode bounds."""

    episodes: list[int]  # store episode indices
    successes: list[bool]
    sources: list[str]
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # cumulative

    def __len__(self) -> int:
        return len(self.labels)

    def episode_slices(self) -> list[slice]:
        starts = np.concatenate([[0], self.ends[:-1]])
        return [slice(int(s), int(e)) for s, e in zip(starts, self.ends)]

    def per_episode(self, values: np.ndarray) -> list[np.ndarray]:
        return [values[s] for s in self.episode_slices()]


@dataclass
class RewardData:
    store: Path
    profile: str
    obs: dict[str, KeySpec]  # chosen keys, store layout (per frame)
    joint_names: list[str]
    control_rate_hz: float
    train: Split
    val: Split
    test: Split

    def summary(self) -> str:
        def count(s: Split) -> str:
            return f"{sum(s.successes)}+/{len(s.successes) - sum(s.successes)}-"
        return (f"{len(self.train.episodes) + len(self.val.episodes) + len(self.test.episodes)} episodes "
                f"(train {count(self.train)}, val {count(self.val)}, test {count(self.test)}; "
                f"{int(self.train.labels.sum())} positive / {int((~self.train.labels).sum())} negative train frames)")


def _open(path: Path) -> Store:
    if not Path(path).exists():
        raise ConfigError(f"store {path} does not exist", "--store")
    try:
        return Store.open(path, "r")
    except StoreError as e:
        raise ConfigError(str(e), "--store") from None


def check_store_fits_profile(store: Store, profile, obs_keys: list[str]) -> None:
    """The classifier is saved for `profile`; its training frames must have the profile's layout."""
    from robot_rl.data.recording import store_layout

    keys, attrs = store_layout(profile, record_depth=True)
    recorded = store.attrs.get("profile", {}).get("name", "?")
    problems = []
    joints = list(store.attrs.get("action", {}).get("joint_names", []))
    if joints != list(profile.robot.joint_names):
        problems.append(f"joints {joints} vs the profile's {profile.robot.joint_names}")
    for k in obs_keys:
        if k not in keys:
            problems.append(f"{k} is not a stream of profile {profile.name}")
        elif keys[k] != store.keys[k]:
            problems.append(f"{k} is {store.keys[k].shape} {store.keys[k].dtype} in the store, "
                            f"{keys[k].shape} {keys[k].dtype} in the profile")
    if problems:
        raise ConfigError(f"store {store.path} (recorded with profile {recorded}) does not fit profile "
                          f"{profile.name}: {'; '.join(problems)} (pass --profile {recorded} or use a store "
                          f"recorded with {profile.name})", "--profile")


def choose_obs_keys(store: Store, model_cfg: RewardModelConfig) -> list[str]:
    keys = list(model_cfg.obs_keys) or default_obs_keys(store.keys)
    missing = [k for k in keys if k not in store.keys]
    if missing:
        raise ConfigError(f"store {store.path} has no key {', '.join(missing)} "
                          f"(its obs keys: {', '.join(k for k in sorted(store.keys) if k.startswith('obs/'))})",
                          "obs_keys")
    if not keys:
        raise ConfigError(f"store {store.path} has no camera, tactile or joint position stream", "obs_keys")
    return sorted(keys)


def split_episodes(meta: list[dict], cfg: RewardTrainConfig) -> tuple[list[int], list[int], list[int]]:
    """Stratified by label, seeded: (train, val, test) store episode indices, each sorted."""
    rng = np.random.default_rng(cfg.seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in (True, False):
        idx = np.array([m["index"] for m in meta if m["success"] == label])
        idx = idx[rng.permutation(len(idx))]
        n_test = max(1, int(round(cfg.test_fraction * len(idx))))
        n_val = max(1, int(round(cfg.val_fraction * len(idx))))
        parts[2].extend(idx[:n_test].tolist())
        parts[1].extend(idx[n_test:n_test + n_val].tolist())
        parts[0].extend(idx[n_test + n_val:].tolist())
    return tuple(sorted(p) for p in parts)  # type: ignore[return-value]


def select_episodes(store: Store, cfg: RewardTrainConfig) -> list[dict]:
    meta = store.episodes_meta()
    if cfg.sources:
        known = sorted({m["source"] for m in meta})
        meta = [m for m in meta if m["source"] in cfg.sources]
        if not meta:
            raise ConfigError(f"store {store.path} has no episode of source {', '.join(cfg.sources)} "
                              f"(it has: {', '.join(known) or 'no episodes'})", "--sources")
    wins = sum(m["success"] for m in meta)
    losses = len(meta) - wins
    if wins == 0 or losses == 0:
        which = "successful" if wins == 0 else "failed"
        raise ConfigError(f"store {store.path} has no {which} episode ({wins} successful, {losses} failed): "
                          "a success classifier needs both labels (record failures too, e.g. policy rollouts)",
                          "--store")
    if min(wins, losses) < MIN_PER_CLASS:
        raise ConfigError(f"store {store.path} has too few episodes: {wins} successful and {losses} failed; "
                          f"need at least {MIN_PER_CLASS} of each (train, validation and test each need both labels)",
                          "--store")
    return meta


def load_split(store: Store, episodes: list[int], meta_by_index: dict[int, dict], obs: dict[str, KeySpec],
               image_size: int, positive_window: int, progress=None) -> Split:
    split = Split(episodes=list(episodes), successes=[meta_by_index[i]["success"] for i in episodes],
                  sources=[meta_by_index[i]["source"] for i in episodes])
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    labels, lengths = [], []
    for i, success in zip(episodes, split.successes):
        ep = store.read_episode(i, list(obs))
        for k, spec in obs.items():
            v = ep[k]
            if is_camera(k, spec):
                v = prepare_images(torch.from_numpy(v), image_size).numpy()
            else:
                v = v.astype(np.float32, copy=False)
            chunks[k].append(v)
        n = len(ep[next(iter(obs))])
        labels.append(frame_labels(n, success, positive_window))
        lengths.append(n)
        if progress is not None:
            progress.update(1)
    split.obs = {k: np.concatenate(v) for k, v in chunks.items()}
    split.labels = np.concatenate(labels)
    split.ends = np.cumsum(lengths).astype(np.int64)
    return split


def load_reward_data(store_path: str | Path, profile, model_cfg: RewardModelConfig, cfg: RewardTrainConfig,
                     progress: bool = False) -> RewardData:
    store = _open(Path(store_path))
    obs_keys = choose_obs_keys(store, model_cfg)
    check_store_fits_profile(store, profile, obs_keys)
    meta = select_episodes(store, cfg)
    train, val, test = split_episodes(meta, cfg)
    by_index = {m["index"]: m for m in meta}
    obs = {k: store.keys[k] for k in obs_keys}
    from tqdm import tqdm

    with tqdm(total=len(meta), desc="loading episodes", unit="episode", disable=not progress,
              dynamic_ncols=True) as bar:
        splits = [load_split(store, eps, by_index, obs, model_cfg.encoder.image_size, cfg.positive_window, bar)
                  for eps in (train, val, test)]
    store.close()
    return RewardData(store=Path(store_path), profile=profile.name, obs=obs, joint_names=list(profile.robot.joint_names),
                      control_rate_hz=float(profile.robot.control_rate_hz), train=splits[0], val=splits[1],
                      test=splits[2])


class BalancedSampler:
    """Batches of half positive, half negative training frames.

    A fraction `hard_fraction` of each half is drawn in proportion to the frame's last seen loss
    (frames not drawn yet count as hard), the rest uniformly: a few failed episodes hold the only
    frames that look almost like a success (the object released just off the goal), and uniform
    sampling would show them rarely among thousands of easy frames."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, hard_fraction: float = 0.0):
        self.pools = (np.flatnonzero(labels), np.flatnonzero(~labels))
        self.loss = [np.full(len(p), 1.0) for p in self.pools]
        self.half = batch_size // 2
        self.n_hard = int(round(hard_fraction * self.half))
        self.rng = np.random.default_rng(seed)
        self._last: list[np.ndarray] = []

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        idx, self._last = [], []
        for pool, loss in zip(self.pools, self.loss):
            uniform = self.rng.integers(0, len(pool), self.half - self.n_hard)
            hard = self.rng.choice(len(pool), self.n_hard, p=loss / loss.sum()) if self.n_hard else uniform[:0]
            pick = np.concatenate([uniform, hard])
            self._last.append(pick)
            idx.append(pool[pick])
        y = np.concatenate([np.ones(self.half, np.float32), np.zeros(self.half, np.float32)])
        return np.concatenate(idx), y

    def update(self, losses: np.ndarray) -> None:
        """Per-frame losses of the last batch (in its order): the priorities of its frames."""
        losses = np.asarray(losses, np.float64)
        for k, (pick, loss) in enumerate(zip(self._last, self.loss)):
            loss[pick] = np.maximum(losses[k * self.half:(k + 1) * self.half], 1e-3)
