"""QoS profiles of DESIGN.md §3, in one place. Publishers and subscribers both take them from here."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Camera, tactile and joint-state streams: newest data wins, never block the producer.
SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
)
# Robot commands: every command counts, only the latest matters.
COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# A recorder's view of commands and policy outputs: every message must be kept, even when the
# recorder's callbacks fall behind the (lockstep) publisher. Compatible with COMMAND publishers.
RECORDING = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=200,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Events, teleop, policy outputs, diagnostics.
RELIABLE = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Camera info, residual weights: late joiners get the last value.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def sensor_subscription(rate_hz: float, buffer_s: float = 0.05) -> QoSProfile:
    """Sensor QoS for a subscriber: best effort, but a queue deep enough for `buffer_s` of the stream.

    Keep-last-5 on the reading side loses samples of a 500 Hz stream whenever the subscriber's
    thread stalls for 10 ms (GC, an image conversion, a busy core); 50 ms of slack costs little.
    Compatible with publishers using SENSOR.
    """
    depth = max(SENSOR.depth, int(rate_hz * buffer_s + 0.999))
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
