"""Frame labels and precision/recall of a success classifier, per frame and per episode (numpy only).

Per episode, the classifier "says success" when the detector fires (M consecutive frames at or above
the threshold, `detector.first_fire`). On a successful episode that counts as a true positive only
if it fires on time: at or after `on_time_slack` frames before the positive window. Firing earlier
would end a real session before the task is done, so an early fire counts as a false positive (and
the episode as missed). On a failed episode any fire is a false positive.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from robot_rl.reward.detector import first_fire


def frame_labels(length: int, success: bool, positive_window: int) -> np.ndarray:
    """SERL-style per-frame labels: the last `positive_window` frames of a successful episode are 1."""
    y = np.zeros(length, dtype=bool)
    if success:
        y[max(0, length - positive_window):] = True
    return y


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0  # nothing predicted: no false alarm
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Probability that a random positive frame scores above a random negative one (ties count half)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks of ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the precision-recall curve (mean precision at each positive's rank): how clean the
    top of the ranking is, which is where a high-precision threshold lives."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if not labels.any():
        return None
    y = labels[np.argsort(-scores, kind="mergesort")]
    hits = np.cumsum(y)
    return float((hits[y] / (np.flatnonzero(y) + 1)).mean())


def frame_metrics(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float) -> dict:
    p = np.concatenate([np.asarray(x, np.float64) for x in probs]) if len(probs) else np.zeros(0)
    y = np.concatenate([np.asarray(x, bool) for x in labels]) if len(labels) else np.zeros(0, bool)
    pred = p >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision, recall, f1 = _prf(tp, fp, fn)
    auc, ap = roc_auc(p, y), average_precision(p, y)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "positives": int(y.sum()), "negatives": int((~y).sum()),
            "roc_auc": None if auc is None else round(auc, 4),
            "average_precision": None if ap is None else round(ap, 4)}


def episode_score(probabilities: np.ndarray, consecutive: int) -> float:
    """The highest threshold at which the detector would still fire on this episode: the best
    minimum over any M consecutive frames. Ranks episodes without choosing a threshold."""
    p = np.asarray(probabilities, np.float64)
    if len(p) < consecutive:
        return 0.0
    windows = np.lib.stride_tricks.sliding_window_view(p, consecutive)
    return float(windows.min(axis=1).max())


def episode_metrics(probs: Sequence[np.ndarray], successes: Sequence[bool], threshold: float, consecutive: int,
                    positive_window: int, on_time_slack: int) -> dict:
    tp = fp = early = fn = tn = 0
    offsets = []  # fire frame minus last frame, for on-time fires on successful episodes
    for p, success in zip(probs, successes):
        fire = first_fire(p, threshold, consecutive)
        n = len(p)
        if not success:
            fp, tn = fp + (fire is not None), tn + (fire is None)
        elif fire is None:
            fn += 1
        elif fire >= n - positive_window - on_time_slack:
            tp += 1
            offsets.append(fire - (n - 1))
        else:
            early += 1
    precision, recall, f1 = _prf(tp, fp + early, fn + early)
    n_success = int(sum(bool(s) for s in successes))
    auc = roc_auc(np.array([episode_score(p, consecutive) for p in probs]), np.array(successes, bool))
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "accuracy": round((tp + tn) / max(1, len(successes)), 4),
            "tp": tp, "fp": fp, "early": early, "fn": fn, "tn": tn,
            "successful": n_success, "failed": len(successes) - n_success,
            "roc_auc": None if auc is None else round(auc, 4),  # successful vs failed, by episode_score
            "mean_fire_offset": round(float(np.mean(offsets)), 2) if offsets else None}


def choose_threshold(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], successes: Sequence[bool],
                     consecutive: int, positive_window: int, on_time_slack: int, min_precision: float) -> dict:
    """The threshold for the session, chosen on validation episodes: the highest per-episode recall
    whose per-episode precision reaches `min_precision` (false successes poison an RL reward more than
    missed ones), ties broken by per-frame F1 and then toward the middle of the equally good range.
    If no threshold reaches the precision, the best precision-weighted F (F0.5) among thresholds that
    find at least one success is taken, and `precision_target_met` says so."""
    flat = np.concatenate([np.asarray(x, np.float64) for x in probs])
    candidates = np.unique(np.concatenate([np.linspace(0.05, 0.99, 95), np.quantile(flat, np.linspace(0, 1, 201)),
                                           [0.995, 0.999]]))
    candidates = candidates[(candidates > 0.0) & (candidates < 1.0)]
    rows = []
    for t in candidates:
        ep = episode_metrics(probs, successes, float(t), consecutive, positive_window, on_time_slack)
        fr = frame_metrics(probs, labels, float(t))
        rows.append((float(t), ep, fr))
    met = [r for r in rows if r[1]["precision"] >= min_precision and r[1]["tp"] > 0]
    if met:
        best = max((r[1]["recall"], r[2]["f1"]) for r in met)
        tied = [r for r in met if (r[1]["recall"], r[2]["f1"]) == best]
    else:
        def f_half(r):
            p, q = r[1]["precision"], r[1]["recall"]
            return 1.25 * p * q / (0.25 * p + q) if p + q else 0.0
        found = [r for r in rows if r[1]["tp"] > 0] or rows
        best = max((f_half(r), r[2]["f1"]) for r in found)
        tied = [r for r in found if (f_half(r), r[2]["f1"]) == best]
    t, ep, fr = tied[len(tied) // 2]
    return {"threshold": round(t, 6), "precision_target_met": bool(met), "min_precision": min_precision,
            "val_episode": ep, "val_frame": fr}
