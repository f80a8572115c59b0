"""Training loop for the base policies: AdamW with warm-up + cosine LR, optional EMA, periodic
validation on held-out episodes, atomic periodic/final checkpoints and exact resume.

Every input problem (store, config, resume checkpoint) is raised by `prepare()` before any step
runs, so the CLI can answer with one line and exit code 2.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.config.typed import ConfigError, from_dict, load_yaml, to_dict
from robot_rl.policies import checkpoint as ckpt_io
from robot_rl.policies import train_state
from robot_rl.policies.dataset import DatasetError, PolicyDataset
from robot_rl.policies.ema import EMA
from robot_rl.policies.registry import policy_classes


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    step: int
    stopped: str  # "done" | "time" | "stop_at"
    train_loss: float
    val: dict
    elapsed_s: float
    steps_this_run: int
    sha256: str
    elapsed_run_s: float = 0.0

    def summary(self, policy: str) -> str:
        rate = self.steps_this_run / max(self.elapsed_run_s, 1e-9)
        val = ", ".join(f"{k} {v:.4g}" for k, v in self.val.items()) or "no validation episodes"
        return (f"train-base: {policy} step {self.step} ({self.stopped}) in {self.elapsed_run_s / 60:.1f} min "
                f"({rate:.2f} steps/s), train loss {self.train_loss:.4g}, {val} -> {self.checkpoint} "
                f"(sha256 {self.sha256[:12]})")


def load_run_config(policy: str, path: str | Path | None) -> tuple[Any, Any]:
    """(policy config, train config) from a YAML file with optional `policy:` and `train:` sections."""
    policy_cls, train_cls, _ = policy_classes(policy)
    data = load_yaml(path) if path else {}
    data = data or {}
    try:
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping with 'policy:' and/or 'train:' sections")
        unknown = sorted(set(data) - {"policy", "train"})
        if unknown:
            raise ConfigError(f"unknown section(s) {', '.join(unknown)} (known: policy, train)")
        return from_dict(policy_cls, data.get("policy"), "policy"), from_dict(train_cls, data.get("train"), "train")
    except ConfigError as e:
        raise e.located(path) if path and e.source is None else e from None


def lr_at(step: int, cfg) -> float:
    """Linear warm-up (at most a tenth of the run) then cosine decay to 0 at `steps`."""
    warm = min(1.0, (step + 1) / max(1, min(cfg.warmup_steps, cfg.steps // 10)))
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


class Trainer:
    def __init__(self, store: str | Path, policy: str, out: str | Path, *, config_file: str | Path | None = None,
                 policy_cfg=None, train_cfg=None, steps: int | None = None, minutes: float | None = None,
                 resume: str | Path | None = None, seed: int | None = None, device: str | None = None,
                 log: Callable[[str], None] = print):
        """Checks everything (may raise ConfigError / SpecError / DatasetError / StoreError)."""
        self.out, self.minutes, self.log = Path(out), minutes, log
        resumed = None
        if resume is not None:
            if config_file is not None:
                raise ConfigError("--config cannot change a resumed run (its config is in the checkpoint)")
            resumed = ckpt_io.load_checkpoint(ckpt_io.latest_resumable(resume), train_state=True)
            if policy and policy != resumed.policy:
                raise ConfigError(f"--policy {policy} but {resumed.path} is a {resumed.policy} checkpoint")
            policy = resumed.policy
            policy_cfg = resumed.config
            train_cfg = from_dict(policy_classes(policy)[1], resumed.train_state["train_config"], "train")
        elif policy_cfg is None or train_cfg is None:
            pc, tc = load_run_config(policy, config_file)
            policy_cfg, train_cfg = policy_cfg or pc, train_cfg or tc
        if steps is not None:
            train_cfg = replace(train_cfg, steps=int(steps))
        if seed is not None and resumed is None:
            train_cfg = replace(train_cfg, seed=int(seed))
        if device is not None:  # a resumed run may move between machines
            train_cfg = replace(train_cfg, device=device)
        from_dict(type(train_cfg), to_dict(train_cfg), "train")  # re-validate overrides
        self.device = pick_device(train_cfg.device)  # before the store is loaded: bad input fails fast
        if resumed is None and any((self.out / d).exists() for d in ("final", "checkpoints")):
            raise ConfigError(f"{self.out} already holds a training run; resume it with --resume {self.out} "
                              "or choose another --out")
        self.policy, self.cfg, self.tcfg = policy, policy_cfg, train_cfg
        episodes = resumed.training.get("episodes") if resumed else None
        self.data = PolicyDataset(store, policy_cfg, train_cfg, expect=resumed.spec if resumed else None,
                                  episodes=episodes)
        if resumed is None:
            self.cfg.observation.keys = list(self.data.obs_keys)
        self.spec = resumed.spec if resumed else self.data.spec
        self.stats = resumed.stats if resumed else self.data.stats
        if resumed is not None and resumed.training.get("data_hash") != self.data.data_hash:
            log(f"warning: the store's rows for episodes {episodes[:3]}... changed since {resumed.path}; "
                "the resumed run will not match an uninterrupted one")
        torch.manual_seed(train_cfg.seed)
        self.model = policy_classes(policy)[2](policy_cfg, self.spec, self.stats).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.ema = EMA(self.model, train_cfg.ema_power, train_cfg.ema_max_decay) if train_cfg.ema else None
        self.rng = np.random.default_rng(train_cfg.seed)
        self.step, self.elapsed_before = 0, 0.0
        if resumed is not None:
            self.step = train_state.restore(resumed.train_state, resumed.train_tensors, self.model, self.opt,
                                            self.ema, resumed.weights if self.ema else None, self.rng)
            self.elapsed_before = float(resumed.train_state.get("elapsed_s", 0.0))
            self.log(f"resuming {resumed.path} at step {self.step}")

    # ---- pieces ----
    def validate(self) -> dict:
        if self.data.val is None:
            return {}
        model = self.ema.model if self.ema else self.model
        was_training = model.training
        model.eval()
        losses, errors = [], []
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # never touches the training RNG
            torch.manual_seed(self.tcfg.seed + 1)
            rng = np.random.default_rng(self.tcfg.seed + 1)  # the same windows every time
            for _ in range(self.tcfg.val_batches):
                batch = self._on_device(self.data.sample(self.tcfg.batch_size, rng, "val"))
                feats, target = model.encode(batch), model.normalized_actions(batch)
                losses.append(float(model.head_loss(feats, target)))
                pred = model.sample(feats, generator=torch.Generator().manual_seed(0))
                errors.append(float(F.mse_loss(pred, target)))
        model.train(was_training)
        return {"val_loss": float(np.mean(losses)), "val_action_mse": float(np.mean(errors))}

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def save(self, path: Path, elapsed: float, val: dict) -> Path:
        meta, tensors = train_state.capture(self.step, self.model, self.opt, self.ema, self.rng,
                                            {"train_config": to_dict(self.tcfg), "elapsed_s": elapsed})
        tensors = {k: v.detach().cpu() for k, v in tensors.items()}
        weights = {k: v.detach().cpu() for k, v in (self.ema.model if self.ema else self.model).state_dict().items()}
        training = {"step": self.step, "elapsed_s": round(elapsed, 2), **self.data.describe(), **val,
                    "train_config": to_dict(self.tcfg)}
        return ckpt_io.save_checkpoint(path, policy=self.policy, config=self.cfg, spec=self.spec, stats=self.stats,
                                       weights=weights, training=training, train_state=meta, train_tensors=tensors)

    def _prune(self) -> None:
        found = sorted((self.out / "checkpoints").glob("step_*"))
        for old in found[:max(0, len(found) - self.tcfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)

    # ---- the loop ----
    def run(self, *, stop_at: int | None = None, progress: bool = True) -> TrainResult:
        from tqdm import tqdm

        cfg = self.tcfg
        self.out.mkdir(parents=True, exist_ok=True)
        logf = open(self.out / "train_log.jsonl", "a")
        tb = _tensorboard(self.out)
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        start_step, t0 = self.step, time.monotonic()
        deadline = t0 + self.minutes * 60 if self.minutes else None
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True)
        self.model.train()
        losses, val, stopped = [], {}, "done"
        try:
            while self.step < end:
                if deadline is not None and time.monotonic() > deadline:
                    stopped = "time"
                    break
                for g in self.opt.param_groups:
                    g["lr"] = lr_at(self.step, cfg)
                loss = self.model.compute_loss(self._on_device(self.data.sample(cfg.batch_size, self.rng)))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                if self.ema:
                    self.ema.update(self.model)
                self.step += 1
                losses.append(float(loss.detach()))
                bar.update(1)
                record: dict[str, Any] = {}
                if self.step % cfg.log_every == 0:
                    record = {"loss": float(np.mean(losses[-cfg.log_every:])), "lr": self.opt.param_groups[0]["lr"]}
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    val = self.validate()
                    record.update(val)
                if record:
                    elapsed = self.elapsed_before + time.monotonic() - t0
                    record.update(step=self.step, elapsed_s=round(elapsed, 2))
                    logf.write(json.dumps(record) + "\n")
                    logf.flush()
                    if tb is not None:
                        for k, v in record.items():
                            if k not in ("step", "elapsed_s"):
                                tb.add_scalar(k, v, self.step)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if "loss" in k or "mse" in k})
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save(self.out / "checkpoints" / f"step_{self.step:07d}",
                              self.elapsed_before + time.monotonic() - t0, val)
                    self._prune()
            if stop_at is not None and self.step >= stop_at and self.step < cfg.steps:
                stopped = "stop_at"
            if self.step >= cfg.steps and not val:
                val = self.validate()
            elapsed = self.elapsed_before + time.monotonic() - t0
            if stopped == "done":
                path = self.save(self.out / "final", elapsed, val)
            else:  # interrupted by the time budget or stop_at: a resumable periodic checkpoint
                path = self.save(self.out / "checkpoints" / f"step_{self.step:07d}", elapsed, val)
        finally:
            bar.close()
            logf.close()
            if tb is not None:
                tb.close()
        run_s = time.monotonic() - t0
        train_loss = float(np.mean(losses[-cfg.log_every:])) if losses else float("nan")
        return TrainResult(out_dir=self.out, checkpoint=path, step=self.step, stopped=stopped, train_loss=train_loss,
                           val=val, elapsed_s=elapsed, steps_this_run=self.step - start_step,
                           sha256=ckpt_io.checkpoint_hash(path), elapsed_run_s=run_s)


def pick_device(name: str) -> torch.device:
    """`train.device`: auto takes the GPU when torch sees one. Batches are drawn and augmented with
    the CPU RNGs either way, so a GPU run samples the same windows and crops as a CPU run."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda, but torch sees no GPU (use auto or cpu)")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _tensorboard(out: Path):
    """TensorBoard event files only if the package happens to be installed (never a dependency)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - ImportError, or a broken optional install
        return None
    return SummaryWriter(str(out / "tb"))


INPUT_ERRORS = (ConfigError, DatasetError, ckpt_io.SpecError)
