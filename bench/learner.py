"""Residual learner benchmark (JSON lines): critic updates per second of ResidualTD3 for the CPU
preset and the recipe's size, against a naive one-module-per-head critic in the same run, and the
achieved GFLOP/s against this machine's measured matmul peak.

    python bench/learner.py [--device cpu|cuda] [--threads 1,2] [--quick]

One "update" is what the learner runs per sampled batch: encoder, target actor + the drawn target
heads, critic forward/backward/AdamW step/Polyak, and an actor update every `actor_every` updates
(counted in the average). FLOPs are counted by torch's FlopCounterMode over `actor_every` real
updates, so both implementations are charged the same matmul work. The naive baseline is a fair
one: same agent code, fused AdamW, only the drawn target heads evaluated (as REDQ does). Rounds of
the two implementations are interleaved and the best round reported (the machine is shared).
Peak = the best 4096^3 fp32 matmul, measured before and after, same process, same threads.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robot_rl.data.schema import KeySpec  # noqa: E402
from robot_rl.rl import ReplayBuffer, ResidualTD3, preset  # noqa: E402
from robot_rl.rl.cpu import configure_cpu  # noqa: E402

N_JOINTS = 7
OBS = {"obs/joint_pos": KeySpec((N_JOINTS,), "float32"), "obs/joint_vel": KeySpec((N_JOINTS,), "float32"),
       "obs/tactile_tip": KeySpec((4, 4), "float32")}


class NaiveCritic(nn.Module):
    """The obvious ensemble: a ModuleList of per-head MLPs, looped in Python."""

    def __init__(self, in_dim: int, hidden: int, layers: int, heads: int):
        super().__init__()

        def head():
            mods, dim = [], in_dim
            for _ in range(layers):
                mods += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU()]
                dim = hidden
            return nn.Sequential(*mods, nn.Linear(dim, 1))

        self.heads = nn.ModuleList(head() for _ in range(heads))

    def forward(self, x, heads=None):
        chosen = range(len(self.heads)) if heads is None else heads.tolist()  # REDQ: only the drawn heads
        return torch.stack([self.heads[i](x).squeeze(-1) for i in chosen])


class NaiveTD3(ResidualTD3):
    def _make_critic(self, in_dim, cfg):
        return NaiveCritic(in_dim, cfg.critic_hidden, cfg.critic_layers, cfg.num_critics)


def emit(**kw) -> None:
    print(json.dumps({"bench": "learner", **kw}), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int, reps: int) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        sync(device)
        t = time.perf_counter()
        (a @ b).sum().item()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def filled_buffer(agent: ResidualTD3, rng) -> ReplayBuffer:
    c = agent.cfg
    buf = ReplayBuffer(4096, agent.obs_spec, N_JOINTS, n_step=c.n_step, gamma=c.gamma, chunk_length=c.chunk_length,
                       device=agent.device)
    for _ in range(40):
        T = 50
        obs = {k: rng.normal(size=(T, *s.shape)).astype(np.float32) for k, s in agent.obs_spec.items()}
        r = np.zeros(T, np.float32)
        buf.add_episode(obs, rng.uniform(-0.8, 0.8, (T, N_JOINTS)), rng.uniform(-1, 1, (T, N_JOINTS)), r,
                        terminal=False)
    return buf


def setup(cls, cfg, device):
    """An agent, a few fixed batches, and its matmul FLOPs per update (averaged over one actor
    period, so the every-`actor_every` actor update is charged its share)."""
    agent = cls(cfg, OBS, N_JOINTS, device=device)
    buf = filled_buffer(agent, np.random.default_rng(0))
    batches = [agent.sample(buf, buf) for _ in range(cfg.actor_every)]
    with FlopCounterMode(display=False) as fc:
        for b in batches:
            agent.update(b)
    return agent, batches, fc.get_total_flops() / cfg.actor_every


def time_updates(agent, batches, n: int, device) -> float:
    sync(device)
    t = time.perf_counter()
    for i in range(n):
        agent.update(batches[i % len(batches)])
    sync(device)
    return (time.perf_counter() - t) / n


def compare(impls: dict, cfg, device, n: int, rounds: int) -> dict:
    """Interleaved rounds (A, B, A, B, ...) so that load from other processes on a shared machine
    hits both alike; per implementation the best round (its capability) and the median."""
    setups = {name: setup(cls, cfg, device) for name, cls in impls.items()}
    times: dict[str, list[float]] = {name: [] for name in impls}
    for r in range(rounds + 1):
        for name, (agent, batches, _) in setups.items():
            dt = time_updates(agent, batches, n, device)
            if r:  # round 0 warms allocator and caches
                times[name].append(dt)
    out = {}
    for name, (agent, _, flops) in setups.items():
        best, med = min(times[name]), float(np.median(times[name]))
        out[name] = {"updates_per_s": 1 / best, "median_updates_per_s": 1 / med, "ms_per_update": best * 1e3,
                     "gflop_per_update": flops / 1e9, "gflops": flops / best / 1e9}
    return out


def bench_threads(args, device: torch.device, threads: int | None) -> None:
    cpu = configure_cpu(threads, allocator=not args.no_allocator_tuning) if device.type == "cpu" else {}
    env = {"device": str(device), **cpu, "torch": torch.__version__}
    size = 4096 if device.type == "cpu" else 8192
    peak = matmul_peak(device, size, 2 if args.quick else 4)
    emit(what="matmul_peak", gflops=round(peak, 1), size=size, **env)
    sizes = {
        "cpu_small": preset("cpu_small", critic_warmup_updates=0, warmup_env_steps=0),
        "recipe": preset("recipe", critic_warmup_updates=0, warmup_env_steps=0),
    }
    rows = []
    for name, cfg in sizes.items():
        n = {"cpu_small": 20, "recipe": 2}[name] if device.type == "cpu" else 50
        rounds = 3 if args.quick else 7
        shape = {"heads": cfg.num_critics, "hidden": cfg.critic_hidden, "layers": cfg.critic_layers,
                 "batch": cfg.batch_size}
        rows.append((name, shape, n * rounds, compare({"batched": ResidualTD3, "naive": NaiveTD3}, cfg, device, n,
                                                      rounds)))
    # the peak again at the end; the best of both is the machine's peak for this run
    peak = max(peak, matmul_peak(device, size, 2 if args.quick else 4))
    for name, shape, updates, results in rows:
        for impl, r in results.items():
            emit(what="critic_updates", preset=name, impl=impl, **shape, updates=updates,
                 updates_per_s=round(r["updates_per_s"], 2), median_updates_per_s=round(r["median_updates_per_s"], 2),
                 ms_per_update=round(r["ms_per_update"], 2), gflop_per_update=round(r["gflop_per_update"], 3),
                 gflops=round(r["gflops"], 1), peak_gflops=round(peak, 1), peak_fraction=round(r["gflops"] / peak, 3),
                 **env)
        emit(what="summary", preset=name, batched_over_naive=round(
            results["batched"]["updates_per_s"] / results["naive"]["updates_per_s"], 2),
            batched_peak_fraction=round(results["batched"]["gflops"] / peak, 3), **env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated torch intra-op thread counts to run (CPU); see robot_rl/rl/cpu.py")
    ap.add_argument("--no-allocator-tuning", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    for threads in ([int(t) for t in args.threads.split(",")] if device.type == "cpu" else [None]):
        bench_threads(args, device, threads)


if __name__ == "__main__":
    main()
