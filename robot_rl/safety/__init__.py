"""Robot-side safety: limits, rate limits, staleness watchdog, e-stop (DESIGN.md §7)."""
from robot_rl.safety.envelope import SafetyCounters, SafetyEnvelope

__all__ = ["SafetyCounters", "SafetyEnvelope"]
