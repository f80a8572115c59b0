"""Sensor streaming between processes: the project's ROS layer vs bare rclpy, side by side.

Payload (DESIGN.md §3 streams): two 640x480 rgb8 cameras at 30 Hz, a 16x16 32FC1 tactile image at
500 Hz and 6-joint states at 500 Hz, from one publisher process to one subscriber process.
Three runs in one invocation:
- project:      robot_rl.ros (convert.py messages, qos.SENSOR, the Fast DDS XML profile), and the
                subscriber converts every message back to numpy like the nodes do;
- bare:         hand-written rclpy messages and QoS, the same Fast DDS XML profile, no conversion;
- bare_default: bare rclpy with Fast DDS defaults (512 KB shared-memory segment): why the XML exists.
Prints one JSON line per run with delivered fraction and stamp->receive latency (p50/p99), then a
summary line with the project/bare latency ratio. Target: >= 99.9 % delivered, p99 <= 10 ms,
project p99 within 1.2x of bare.

    python bench/stream.py [--duration 10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STREAMS = {  # topic -> (kind, rate_hz)
    "/cameras/front/color/image_raw": ("rgb", 30.0),
    "/cameras/wrist/color/image_raw": ("rgb", 30.0),
    "/tactile/pad/image": ("tactile", 500.0),
    "/robot/joint_states": ("joints", 500.0),
}
JOINTS = ["j1", "j2", "j3", "j4", "j5", "gripper"]


def make_env(impl: str, domain: int) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if impl != "bare_default":
        from robot_rl.ros.env import configure_ros_environment

        configure_ros_environment(env)
    return env


# -- message builders ---------------------------------------------------------------------------
def project_builders():
    from robot_rl.ros import convert

    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    tactile = np.random.default_rng(1).random((16, 16), dtype=np.float32)
    return {
        "rgb": lambda t: convert.image_to_msg(rgb, "rgb8", t, "cam"),
        "tactile": lambda t: convert.image_to_msg(tactile, "32FC1", t, "pad"),
        "joints": lambda t: convert.joint_state_msg(JOINTS, np.zeros(6), np.zeros(6), np.zeros(6), t),
    }


def bare_builders():
    from sensor_msgs.msg import Image, JointState

    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8).tobytes()
    tactile = np.random.default_rng(1).random((16, 16), dtype=np.float32).tobytes()

    def stamp(msg, t):
        msg.header.stamp.sec = int(t)
        msg.header.stamp.nanosec = int((t - int(t)) * 1e9)
        return msg

    def image(data, h, w, enc, step):
        def build(t):
            m = Image(height=h, width=w, encoding=enc, step=step)
            m.data = data
            return stamp(m, t)
        return build

    def joints(t):
        return stamp(JointState(name=JOINTS, position=[0.0] * 6, velocity=[0.0] * 6, effort=[0.0] * 6), t)

    return {"rgb": image(rgb, 480, 640, "rgb8", 1920), "tactile": image(tactile, 16, 16, "32FC1", 64), "joints": joints}


def msg_types():
    from sensor_msgs.msg import Image, JointState

    return {"rgb": Image, "tactile": Image, "joints": JointState}


def sensor_qos(impl: str, rate_hz: float, subscriber: bool):
    if impl == "project":
        from robot_rl.ros import qos

        return qos.sensor_subscription(rate_hz) if subscriber else qos.SENSOR
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


# -- roles (child processes) --------------------------------------------------------------------
def run_publisher(impl: str, duration: float) -> None:
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_pub")
    builders = project_builders() if impl == "project" else bare_builders()
    types = msg_types()
    pubs = {topic: node.create_publisher(types[kind], topic, sensor_qos(impl, rate, False))
            for topic, (kind, rate) in STREAMS.items()}
    deadline = time.monotonic() + 20
    while any(p.get_subscription_count() < 1 for p in pubs.values()):
        if time.monotonic() > deadline:
            raise SystemExit("publisher: subscriber never matched")
        time.sleep(0.01)
    time.sleep(0.5)  # let discovery settle on both sides
    start = time.monotonic()
    due = {topic: start for topic in STREAMS}
    sent = {topic: 0 for topic in STREAMS}
    while True:
        topic = min(due, key=due.get)
        wait = due[topic] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if due[topic] - start >= duration:
            break
        kind, rate = STREAMS[topic]
        pubs[topic].publish(builders[kind](time.time()))
        sent[topic] += 1
        due[topic] += 1.0 / rate
    time.sleep(1.0)  # let the last messages arrive before the parent asks for results
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(impl: str) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bench_sub")
    types = msg_types()
    latencies = {topic: [] for topic in STREAMS}
    if impl == "project":
        from robot_rl.ros import convert

        def on_msg(msg, topic):
            now = time.time()
            if hasattr(msg, "encoding"):
                convert.msg_to_image(msg)  # what a node does with an image
            latencies[topic].append(now - convert.from_time(msg.header.stamp))
    else:
        def on_msg(msg, topic):
            now = time.time()
            latencies[topic].append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
    for topic, (kind, rate) in STREAMS.items():
        node.create_subscription(types[kind], topic, lambda m, t=topic: on_msg(m, t), sensor_qos(impl, rate, True))
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("ready", flush=True)
    while not done.is_set():
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({"latency_ms": {t: [v * 1e3 for v in lat] for t, lat in latencies.items()}}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# -- driver -------------------------------------------------------------------------------------
def measure(impl: str, duration: float, domain: int) -> dict:
    env = make_env(impl, domain)
    me = [sys.executable, os.path.abspath(__file__)]
    sub = subprocess.Popen(me + ["--role", "sub", "--impl", impl], env=env, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "ready"
    pub = subprocess.run(me + ["--role", "pub", "--impl", impl, "--duration", str(duration)], env=env,
                         capture_output=True, text=True, timeout=duration + 60)
    if pub.returncode != 0:
        sub.kill()
        raise RuntimeError(f"{impl} publisher failed: {pub.stderr[-2000:]}")
    sent = json.loads(pub.stdout.strip().splitlines()[-1])["sent"]
    out, _ = sub.communicate(input="", timeout=60)
    latency = json.loads(out.strip().splitlines()[-1])["latency_ms"]
    all_lat = np.concatenate([np.asarray(v) for v in latency.values()])
    result = {"bench": "stream", "impl": impl, "duration_s": duration,
              "delivered": sum(len(v) for v in latency.values()) / max(1, sum(sent.values())),
              "latency_p50_ms": round(float(np.percentile(all_lat, 50)), 3) if len(all_lat) else None,
              "latency_p99_ms": round(float(np.percentile(all_lat, 99)), 3) if len(all_lat) else None,
              "streams": {}}
    for topic, (kind, rate) in STREAMS.items():
        lat = np.asarray(latency[topic])
        result["streams"][topic] = {
            "rate_hz": rate, "sent": sent[topic], "delivered": round(len(lat) / max(1, sent[topic]), 5),
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["pub", "sub"])
    parser.add_argument("--impl", default="project", choices=["project", "bare", "bare_default"])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--domain", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0") or 0) or 77)
    args = parser.parse_args()
    if args.role == "pub":
        return run_publisher(args.impl, args.duration)
    if args.role == "sub":
        return run_subscriber(args.impl)
    results = {}
    for i, impl in enumerate(["project", "bare", "bare_default"]):
        results[impl] = measure(impl, args.duration, args.domain + i)
        print(json.dumps(results[impl]), flush=True)
    p, b = results["project"], results["bare"]
    print(json.dumps({
        "bench": "stream_summary",
        "project_delivered": round(p["delivered"], 5), "bare_delivered": round(b["delivered"], 5),
        "bare_default_delivered": round(results["bare_default"]["delivered"], 5),
        "project_p99_ms": p["latency_p99_ms"], "bare_p99_ms": b["latency_p99_ms"],
        "p99_ratio_project_over_bare": round(p["latency_p99_ms"] / b["latency_p99_ms"], 3),
        "p50_ratio_project_over_bare": round(p["latency_p50_ms"] / b["latency_p50_ms"], 3),
        "targets": {"delivered": 0.999, "p99_ms": 10.0, "ratio": 1.2},
    }), flush=True)


if __name__ == "__main__":
    main()
