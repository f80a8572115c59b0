"""Control-loop costs of fine-tuning: a tick with the residual, and a weight swap from publish to active.

- tick: ChunkExecutor.action_at (a cached chunk) + the residual on the tick's observation (two 128x128
  cameras, tactile, joints) + clipping, as the policy node does it; p50/p99 in ms (target p99 <= 2 ms).
  The chunk holds the home pose with the gripper closed, so `cpu_offset`'s gate is open: an offset
  decision every 4 ticks and the Jacobian mapping at every tick.
- swap: the learner's weights message published on /learner/residual_weights (latched, through the
  project's Fast DDS profile) until the policy side has validated it (metadata, architecture,
  checksum, shapes, finite values) and swapped it in; p50/p95 in ms per preset, with the message
  size (target p95 <= 50 ms for weights up to 25 MB; `recipe_wide` is the recipe with a 2048-wide
  actor, ~25 MB, the issue's upper size).
Runs with the allocator policy the learner and policy nodes set (`keep_freed_memory`: without it
every large message is mmap'd and page-faulted afresh; `--no-allocator-tuning` shows that cost).
Prints JSON lines.

    python bench/control.py [--ticks 500] [--swaps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# bench-only sizes: (preset, overrides)
SIZES = {"recipe_wide": ("recipe", {"actor_hidden": 2048})}


def synthetic_store(path: Path, profile) -> None:
    from robot_rl.data.episode_writer import EpisodeWriter
    from robot_rl.data.recording import open_or_create, store_layout

    keys, _ = store_layout(profile)
    rng = np.random.default_rng(0)
    store = open_or_create(path, profile)
    writer = EpisodeWriter(store, background=False)
    for e in range(2):
        writer.begin(source="demo")
        for t in range(20):
            writer.add_step({k: (rng.integers(0, 255, s.shape, dtype=np.uint8) if s.dtype == "uint8" else
                                 (False if s.dtype == "bool" else
                                  (10.0 * e + 0.1 * t if k == "stamp" else rng.uniform(-0.5, 0.5, s.shape).astype(s.dtype))))
                             for k, s in keys.items()})
        writer.commit(success=True, health={"ok": True})
    writer.close()
    store.close()


def observation(profile) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    obs = {"obs/joint_pos": rng.uniform(-1, 1, len(profile.robot.joints)).astype(np.float32),
           "obs/joint_vel": np.zeros(len(profile.robot.joints), np.float32)}
    for cam in profile.cameras:
        obs[f"obs/camera_{cam.name}"] = rng.integers(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
    for tac in profile.tactile:
        obs[f"obs/tactile_{tac.name}"] = rng.random((tac.rows, tac.cols), dtype=np.float32)
    return obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=["cpu_small", "cpu_lowdim", "cpu_offset", "recipe",
                                                          "recipe_wide"])
    parser.add_argument("--no-allocator-tuning", action="store_true", help="glibc defaults instead of the nodes' policy")
    args = parser.parse_args()

    import rclpy
    from std_msgs.msg import UInt8MultiArray

    from robot_rl.config import load_profile
    from robot_rl.control.chunking import ChunkExecutor
    from robot_rl.control.residual import ResidualRunner
    from robot_rl.data.store import Store
    from robot_rl.rl import agent_from_store, export_actor_weights, preset
    from robot_rl.rl.cpu import keep_freed_memory
    from robot_rl.rl.offset import OffsetSpace
    from robot_rl.ros import convert, qos, topics
    from robot_rl.ros.env import configure_ros_environment

    tuned = False if args.no_allocator_tuning else keep_freed_memory()  # as the learner and policy nodes do
    profile = load_profile("sim")
    lower = np.array([j.lower for j in profile.robot.joints])
    upper = np.array([j.upper for j in profile.robot.joints])
    tmp = Path(tempfile.mkdtemp(prefix="bench_control_"))
    synthetic_store(tmp / "store.zarr", profile)
    store = Store.open(tmp / "store.zarr")
    configure_ros_environment()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = rclpy.create_node("bench_control")
    obs = observation(profile)
    for name in args.presets:
        base_preset, overrides = SIZES.get(name, (name, {}))
        cfg = preset(base_preset, chunk_length=8, **overrides)
        space = OffsetSpace(cfg.offset, profile) if cfg.decision == "offset" else None
        agent = agent_from_store(store, cfg, device="cpu", offset_space=space)
        for p in agent.policy.parameters():  # a non-zero residual, like a trained one
            p.data.add_(0.01)
        data, meta = export_actor_weights(agent)
        cfg_file = tmp / f"{name}.yaml"  # the policy side reads the learner's config, as in a session
        cfg_file.write_text(json.dumps({"preset": base_preset, **overrides}))
        runner = ResidualRunner(profile, 8, base_preset, rl_config=str(cfg_file))
        received: list[float] = []
        versions = iter(range(1, 10_000))

        def on_weights(msg, runner=runner):
            blob, m = convert.msg_to_weights(msg)
            if runner.offer(blob, m):
                received.append(time.perf_counter())

        sub = node.create_subscription(UInt8MultiArray, topics.LEARNER_WEIGHTS, on_weights, qos.LATCHED)
        pub = node.create_publisher(UInt8MultiArray, topics.LEARNER_WEIGHTS, qos.LATCHED)
        while pub.get_subscription_count() < 1:
            rclpy.spin_once(node, timeout_sec=0.05)
        swaps = []
        for _ in range(args.swaps):
            msg = convert.weights_to_msg(data, {**meta, "version": next(versions)})
            n = len(received)
            start = time.perf_counter()
            pub.publish(msg)
            while len(received) == n:
                rclpy.spin_once(node, timeout_sec=0.5)
            swaps.append((received[-1] - start) * 1e3)
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)

        chunks = ChunkExecutor(0.1, 8)
        carrying = np.array([j.home for j in profile.robot.joints])
        carrying[profile.robot.joint_names.index(profile.robot.gripper_joint)] = 0.0
        chunks.add(0.0, np.tile(carrying, (16, 1)), now=0.0)
        ticks = []
        for i in range(args.ticks):
            start = time.perf_counter()
            base, phase = chunks.action_at(0.1 * (i % 8))
            residual = runner.apply(obs, base, phase, explore=True)
            np.clip(base + residual, lower, upper)
            ticks.append((time.perf_counter() - start) * 1e3)
        print(json.dumps({"bench": "control", "preset": name, "weights_mb": round(len(data) / 2**20, 2),
                          "tick_p50_ms": round(float(np.percentile(ticks, 50)), 3),
                          "tick_p99_ms": round(float(np.percentile(ticks, 99)), 3),
                          "swap_p50_ms": round(float(np.percentile(swaps, 50)), 2),
                          "swap_p95_ms": round(float(np.percentile(swaps, 95)), 2),
                          "keep_freed_memory": tuned, "targets": {"tick_p99_ms": 2.0, "swap_p95_ms": 50.0, "weights_mb_max": 25}}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    store.close()


if __name__ == "__main__":
    main()
