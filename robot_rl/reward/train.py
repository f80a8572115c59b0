"""Training the reward classifier: class-balanced batches with hard examples, AdamW with random-shift
augmentation, early stopping on the validation frames' average precision, the detector threshold
chosen on validation episodes, precision/recall measured on test episodes the classifier never saw,
then one atomic checkpoint directory (+ metrics.json).

    result = train_reward("data/sim.zarr", profile, "runs/reward")   # raises ConfigError on bad input
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.config.typed import ConfigError, to_dict
from robot_rl.reward.checkpoint import METRICS, save_classifier
from robot_rl.reward.config import RewardModelConfig, RewardTrainConfig
from robot_rl.reward.dataset import BalancedSampler, RewardData, Split, load_reward_data
from robot_rl.reward.metrics import average_precision, choose_threshold, episode_metrics, frame_metrics
from robot_rl.reward.model import RewardNet, normalizer_stats


@dataclass
class RewardResult:
    out: Path
    metrics: dict

    def table(self) -> str:
        m = self.metrics
        t, fr, ep = m["detector"], m["test"]["frame"], m["test"]["episode"]
        rows = [f"held-out test episodes: {ep['successful']} successful, {ep['failed']} failed; threshold "
                f"{t['threshold']:.3f}, {t['consecutive']} consecutive frame(s), positive window {t['positive_window']}",
                f"{'':12s}{'precision':>10s}{'recall':>8s}{'f1':>7s}   counts",
                f"{'per frame':12s}{fr['precision']:>10.3f}{fr['recall']:>8.3f}{fr['f1']:>7.3f}   "
                f"tp {fr['tp']} fp {fr['fp']} fn {fr['fn']} tn {fr['tn']} (ROC AUC {fr['roc_auc']})",
                f"{'per episode':12s}{ep['precision']:>10.3f}{ep['recall']:>8.3f}{ep['f1']:>7.3f}   "
                f"tp {ep['tp']} fp {ep['fp']} early {ep['early']} fn {ep['fn']} tn {ep['tn']} "
                f"(accuracy {ep['accuracy']:.3f})"]
        if not t["precision_target_met"]:
            rows.append(f"warning: no threshold reached per-episode precision {t['min_precision']} on the validation "
                        "episodes; the best precision-weighted one was taken (more failed episodes would help)")
        return "\n".join(rows)


def _batch(split: Split, idx: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v[idx]) for k, v in split.obs.items()}


def _validate(net: RewardNet, split: Split) -> dict:
    """Average precision (the model selection score) and the class-balanced BCE of the validation
    frames (eval mode, no augmentation). The loss keeps rising on a few confidently wrong frames
    while the ranking, which is what a high-precision threshold needs, still improves: select on AP."""
    probs = net.probabilities(split.obs)
    p = torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7)
    y = torch.from_numpy(split.labels)
    losses = [F.binary_cross_entropy(p[mask], torch.full_like(p[mask], float(v))).item()
              for mask, v in ((y, 1.0), (~y, 0.0)) if mask.any()]
    return {"val_ap": round(average_precision(probs, split.labels) or 0.0, 5),
            "val_loss": round(float(np.mean(losses)), 5)}


def _evaluate(net: RewardNet, split: Split, threshold: float, cfg: RewardTrainConfig) -> dict:
    probs = split.per_episode(net.probabilities(split.obs))
    labels = split.per_episode(split.labels)
    return {"episodes": split.episodes,
            "frame": frame_metrics(probs, labels, threshold),
            "episode": episode_metrics(probs, split.successes, threshold, cfg.consecutive, cfg.positive_window,
                                       cfg.on_time_slack)}


def train_reward(store: str | Path, profile, out: str | Path, *, model_cfg: RewardModelConfig | None = None,
                 cfg: RewardTrainConfig | None = None, progress: bool = False, log=print) -> RewardResult:
    model_cfg = model_cfg or RewardModelConfig()
    cfg = cfg or RewardTrainConfig()
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; give a new directory (a reward classifier is never overwritten)",
                          "--out")
    start = time.monotonic()
    data = load_reward_data(store, profile, model_cfg, cfg, progress=progress)
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.obs_keys = sorted(data.obs)
    model_cfg.encoder.obs_keys = sorted(data.obs)
    loaded_s = time.monotonic() - start
    torch.manual_seed(cfg.seed)
    net = RewardNet(data.obs, model_cfg, normalizer_stats(data.obs, data.train.obs))
    n_params = sum(p.numel() for p in net.parameters())
    log(f"== train-reward: {data.summary()} of {store}; obs {', '.join(sorted(data.obs))}; "
        f"{n_params / 1e3:.0f} k params; up to {cfg.steps} steps of batch {cfg.batch_size} -> {out}")
    history = _fit(net, data, cfg, progress)
    best = max(history, key=lambda h: h["val_ap"])
    choice = choose_threshold(data.val.per_episode(net.probabilities(data.val.obs)),
                              data.val.per_episode(data.val.labels), data.val.successes, cfg.consecutive,
                              cfg.positive_window, cfg.on_time_slack, cfg.min_precision)
    detector = {"threshold": choice["threshold"], "consecutive": cfg.consecutive,
                "positive_window": cfg.positive_window, "on_time_slack": cfg.on_time_slack,
                "precision_target_met": choice["precision_target_met"], "min_precision": cfg.min_precision}
    test = _evaluate(net, data.test, choice["threshold"], cfg)
    metrics = {"store": str(Path(store).resolve()), "profile": data.profile, "obs_keys": sorted(data.obs),
               "detector": detector, "test": test,
               "val": {"episodes": data.val.episodes, "frame": choice["val_frame"], "episode": choice["val_episode"]},
               "train": {"episodes": data.train.episodes, "positive_frames": int(data.train.labels.sum()),
                         "negative_frames": int((~data.train.labels).sum()), "best_step": best["step"],
                         "steps_run": history[-1]["step"], "best_val_ap": best["val_ap"],
                         "history": history},
               "config": {"model": to_dict(model_cfg), "train": to_dict(cfg)},
               "seconds": {"load": round(loaded_s, 1), "total": round(time.monotonic() - start, 1)}}
    training = {"store": metrics["store"], "episodes": {"train": data.train.episodes, "val": data.val.episodes,
                                                        "test": data.test.episodes},
                "train_config": to_dict(cfg), "best_step": best["step"]}
    save_classifier(out, net=net, model_cfg=model_cfg, profile=data.profile, joint_names=data.joint_names,
                    control_rate_hz=data.control_rate_hz, detector=detector, training=training, metrics=metrics)
    return RewardResult(out=out, metrics=json.loads((out / METRICS).read_text()))


def _fit(net: RewardNet, data: RewardData, cfg: RewardTrainConfig, progress: bool) -> list[dict]:
    """Train until `steps` or `patience` validations without a better validation AP; leaves the best
    weights in net."""
    from tqdm import tqdm

    sampler = BalancedSampler(data.train.labels, cfg.batch_size, cfg.seed, cfg.hard_fraction)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    best_ap, best_state, stale = -1.0, None, 0
    running = []
    bar = tqdm(range(1, cfg.steps + 1), desc="train-reward", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        net.train()
        idx, y = sampler.sample()
        logits = net(_batch(data.train, idx), augment=True, generator=gen)
        losses = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y), reduction="none")
        sampler.update(losses.detach().numpy())
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            net.eval()
            val = _validate(net, data.val)
            history.append({"step": step, "train_loss": round(float(np.mean(running)), 5), **val})
            running = []
            if val["val_ap"] > best_ap + 1e-4:
                best_ap, stale = val["val_ap"], 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_ap=f"{val['val_ap']:.3f}",
                            best=f"{best_ap:.3f}")
            if stale >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history
