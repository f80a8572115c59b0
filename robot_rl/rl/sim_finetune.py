"""In-process residual fine-tuning on SimRobot (no ROS), for hyperparameter and budget studies.

The same agent, replay buffers, demo relabelling, decisions (rl/decisions.py) and update-to-data
schedule as the learner node, with rollouts and updates interleaved in one process, so a
configuration can be tried in minutes before a real session through the ROS graph (`robot-rl
finetune`). Rollouts mirror the policy node: the base's chunk is executed open loop with the residual
added at every tick (computed per tick, once per chunk and held with `decision: chunk`, or the gated
offset of `decision: offset`), the command clipped to the joint limits; periodic deterministic
evaluations on fixed layouts give the learning curve.

    python -m robot_rl.rl.sim_finetune --base runs/bc/final --store data/sim.zarr --env-steps 30000 \
        --preset cpu_small --set use_cameras=false --out runs/rl_study.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from robot_rl.policies.sim_eval import OpenLoopChunks, observe
from robot_rl.rl.agent import ResidualTD3
from robot_rl.rl.decisions import ChunkHold, episode_transitions
from robot_rl.rl.encoder import BASE_FEATURES
from robot_rl.rl.feed import StoreFeeder, agent_from_store, make_buffers
from robot_rl.rl.learner import base_action_fn_for, base_features_fn_for
from robot_rl.rl.offset import GatedOffset, OffsetSpace, offset_transitions
from robot_rl.stats import wilson


def rollout(robot, profile, base, agent: ResidualTD3, seed: int, *, max_steps: int, explore: bool,
            lower: np.ndarray, upper: np.ndarray, residual: bool = True) -> dict:
    """One episode of base + residual; returns the arrays the learner would read from the store."""
    robot.reset(seed)
    n_sub = max(1, int(round(robot.control_dt / robot.physics_dt)))
    chunks = OpenLoopChunks(base, seed, features=BASE_FEATURES in agent.obs_spec)
    obs_keys = list(agent.obs_spec)
    steps: dict[str, list] = {k: [] for k in (*obs_keys, "base", "action", "phase")}
    success = False
    per_chunk = agent.cfg.decision == "chunk"
    # held for the chunk: the whole residual (decision: chunk) or only its exploration noise
    held_noise = ChunkHold() if explore and agent.cfg.explore_hold == "chunk" and not per_chunk else None
    held_residual = ChunkHold() if per_chunk else None
    gated = GatedOffset(OffsetSpace(agent.cfg.offset, profile)) if agent.cfg.decision == "offset" else None
    half = agent.policy.action_norm.half_range.cpu().numpy()
    episode_noise = agent.draw_noise((1, len(half)), True) if explore and agent.cfg.explore_hold == "episode" else None

    def residual_now(obs, act, phase) -> np.ndarray:
        noise = held_noise.at(phase, lambda: agent.draw_noise((1, len(act)), explore)) if held_noise else episode_noise
        out = agent.policy_step({k: obs[k][None] for k in obs_keys}, act[None].astype(np.float32),
                                torch.tensor([phase]), explore=explore, noise=noise)
        return out.residual_normalized[0].cpu().numpy() * half

    def offset_now(obs, act) -> np.ndarray:  # decision: offset: the residual of the gated offset
        if gated.tick(act):
            out = agent.policy_step({k: obs[k][None] for k in obs_keys}, gated.offset[None].astype(np.float32),
                                    torch.zeros(1, dtype=torch.long), explore=explore)
            gated.set(out.action[0].cpu().numpy())
        return gated.residual(act)

    for _ in range(max_steps):
        obs = observe(robot, profile)
        act, phase = chunks.next(obs)
        if chunks.features is not None:
            obs[BASE_FEATURES] = chunks.features
        act = np.asarray(act, dtype=np.float64)
        res = np.zeros_like(act)
        if residual and gated is not None:
            res = offset_now(obs, act)
        elif residual:
            res = held_residual.at(phase, lambda: residual_now(obs, act, phase)) if per_chunk else \
                residual_now(obs, act, phase)
        command = np.clip(act + res, lower, upper)
        for k in obs_keys:
            steps[k].append(obs[k])
        steps["base"].append(act)
        steps["action"].append(command)
        steps["phase"].append(phase)
        robot.set_target(command)
        robot.step_physics(n_sub)
        if robot.success():
            success = True
            break
    ep = {k: np.stack(v) for k, v in steps.items()}
    ep["success"] = success
    return ep


def add_rollout(agent: ResidualTD3, online, ep: dict, profile=None) -> None:
    cfg, norm = agent.cfg, agent.policy.action_norm
    agent.record_env_steps(len(ep["action"]), 1)
    if cfg.decision == "offset":
        batch = offset_transitions(OffsetSpace(cfg.offset, profile), {k: ep[k] for k in agent.obs_spec}, ep["base"],
                                   ep["action"], bool(ep["success"]), action_scale=cfg.action_scale, gamma=cfg.gamma)
        if batch is not None:
            online.add_episode(**batch, terminal=True)
        return
    reward = np.zeros(len(ep["action"]), np.float32)
    reward[-1] = float(ep["success"])
    batch = episode_transitions(cfg.decision, {k: ep[k] for k in agent.obs_spec}, norm.normalize_np(ep["base"]),
                                norm.normalize_np(ep["action"]), reward, ep["phase"], action_scale=cfg.action_scale,
                                project=cfg.project_actions, gamma=cfg.gamma)
    online.add_episode(**batch, terminal=bool(ep["success"]))


def evaluate(robot, profile, base, agent, episodes: int, seed: int, max_steps: int, lower, upper,
             residual: bool = True) -> tuple[list[bool], np.ndarray]:
    """Successes, and the mean executed correction (command - base, rad) per joint: against a known
    drift it says how far the residual got."""
    eps = [rollout(robot, profile, base, agent, seed + i, max_steps=max_steps, explore=False, lower=lower,
                   upper=upper, residual=residual) for i in range(episodes)]
    correction = np.concatenate([ep["action"] - ep["base"] for ep in eps]).mean(axis=0)
    return [ep["success"] for ep in eps], correction


def correction_by_joint(profile, correction: np.ndarray) -> dict[str, float]:
    return {name: round(float(c), 4) for name, c in zip(profile.robot.joint_names, correction)}


def study(base_dir: Path, store_path: Path, cfg, *, env_steps: int, eval_every: int, eval_episodes: int,
          max_steps: int = 150, out: Path | None = None, profile_name: str = "sim", seed: int = 0,
          eval_base: bool = False, drift: str = "", eval_from: int = 0) -> list[dict]:
    from tqdm import tqdm

    from robot_rl.config import load_profile
    from robot_rl.data.store import Store
    from robot_rl.policies.policy import load_policy
    from robot_rl.sim import SimRobot
    from robot_rl.sim.robot import parse_drift

    profile = load_profile(profile_name)
    drifted = parse_drift(drift, list(profile.robot.joint_names))
    base = load_policy(base_dir, profile)
    cfg = cfg.replace(chunk_length=base.exec_horizon, base_obs_horizon=base.obs_horizon, seed=seed)
    store = Store.open(store_path)
    space = OffsetSpace(cfg.offset, profile) if cfg.decision == "offset" else None
    agent = agent_from_store(store, cfg, base_feature_dim=base.feature_dim, offset_space=space)
    online, demo = make_buffers(agent)
    StoreFeeder(store, agent, online, demo, base_action_fn=base_action_fn_for(base), base_hash=base.checkpoint_hash,
                base_features_fn=base_features_fn_for(base), offset_space=space).poll()
    lower = np.array([j.lower for j in profile.robot.joints])
    upper = np.array([j.upper for j in profile.robot.joints])
    log = open(out, "a") if out else None
    curve: list[dict] = []
    start = time.monotonic()
    window: deque = deque(maxlen=20)

    def record(row: dict) -> None:
        row.update(wall_s=round(time.monotonic() - start, 1), env_steps=agent.env_steps,
                   critic_updates=agent.critic_updates, actor_updates=agent.actor_updates)
        curve.append(row)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    eval_seed = 100_000  # layouts never used for training episodes
    with SimRobot(profile, seed=seed, render=True, drift=drifted) as robot:
        if eval_base:
            wins, _ = evaluate(robot, profile, base, agent, eval_episodes, eval_seed, max_steps, lower, upper, False)
            record({"kind": "eval_base", "success": sum(wins), "episodes": len(wins)})
        bar = tqdm(total=env_steps, unit="step", dynamic_ncols=True)
        next_eval, episode, metrics, exploring = eval_from, 0, {}, []
        while agent.env_steps < env_steps:
            if agent.env_steps >= next_eval:
                wins, correction = evaluate(robot, profile, base, agent, eval_episodes, eval_seed, max_steps,
                                            lower, upper)
                lo, hi = wilson(sum(wins), len(wins))
                record({"kind": "eval", "success": sum(wins), "episodes": len(wins), "ci95": [lo, hi],
                        "correction": correction_by_joint(profile, correction),
                        "exploring": [sum(exploring), len(exploring)],  # the rollouts since the last evaluation
                        **{k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}})
                bar.write(f"env step {agent.env_steps}: eval {sum(wins)}/{len(wins)}")
                next_eval += eval_every
                exploring = []
            ep = rollout(robot, profile, base, agent, seed * 1_000_000 + episode, max_steps=max_steps,
                         explore=True, lower=lower, upper=upper)
            episode += 1
            add_rollout(agent, online, ep, profile)
            window.append(ep["success"])
            exploring.append(ep["success"])
            for m in agent.run_updates(online, demo):
                metrics = m
            bar.update(len(ep["action"]))
            bar.set_postfix(train=f"{sum(window)}/{len(window)}", updates=agent.critic_updates,
                            q=f"{metrics.get('q_mean', 0):.3f}")
        wins, correction = evaluate(robot, profile, base, agent, eval_episodes, eval_seed, max_steps, lower, upper)
        record({"kind": "eval", "success": sum(wins), "episodes": len(wins), "ci95": list(wilson(sum(wins), len(wins))),
                "correction": correction_by_joint(profile, correction), "exploring": [sum(exploring), len(exploring)]})
        bar.close()
    store.close()
    if log:
        log.close()
    return curve


def main(argv: list[str] | None = None) -> int:
    from robot_rl.rl.config import preset
    from robot_rl.rl.cpu import configure_cpu

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--preset", default="cpu_small")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config override (encoder fields: encoder.FIELD=VALUE); values parsed as JSON")
    p.add_argument("--env-steps", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=2_000)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--eval-from", type=int, default=0, metavar="STEP",
                   help="first evaluation at this env step (0: the untouched residual, i.e. the base)")
    p.add_argument("--eval-base", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--drift", default="", metavar="JOINT=RAD[,...]",
                   help="joints settle this far from their targets (a robot changed since the demos)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        target = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = parsed
    configure_cpu(threads=args.threads)
    cfg = preset(args.preset, **overrides)
    curve = study(args.base, args.store, cfg, env_steps=args.env_steps, eval_every=args.eval_every,
                  eval_episodes=args.eval_episodes, out=args.out, seed=args.seed, eval_base=args.eval_base,
                  drift=args.drift, eval_from=args.eval_from)
    print(json.dumps(curve[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
