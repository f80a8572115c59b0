"""The observation/action spec a policy was trained for, and the checks that a store or a profile
provides it (other joints, another camera resolution, a missing stream -> a message naming it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from robot_rl.data.schema import KeySpec


class SpecError(ValueError):
    """A policy, store or profile does not fit together; the message says what differs."""


@dataclass
class PolicySpec:
    obs: dict[str, KeySpec]  # store key -> per-step shape/dtype
    action_key: str
    joint_names: list[str]
    lower: list[float]
    upper: list[float]
    control_rate_hz: float
    profile: str = ""

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    def to_json(self) -> dict:
        return {"obs": {k: v.to_json() for k, v in sorted(self.obs.items())}, "action_key": self.action_key,
                "joint_names": list(self.joint_names), "lower": [float(x) for x in self.lower],
                "upper": [float(x) for x in self.upper], "control_rate_hz": float(self.control_rate_hz),
                "profile": self.profile}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PolicySpec":
        return cls(obs={k: KeySpec(tuple(v["shape"]), v["dtype"]) for k, v in d["obs"].items()},
                   action_key=d["action_key"], joint_names=list(d["joint_names"]), lower=list(d["lower"]),
                   upper=list(d["upper"]), control_rate_hz=float(d["control_rate_hz"]), profile=d.get("profile", ""))


def default_obs_keys(available: Mapping[str, KeySpec]) -> list[str]:
    """Every camera and tactile stream plus joint positions and the low-dim state vector if any
    (velocities are left out: noisy and redundant with a two-step history)."""
    keys = [k for k in available if k.startswith(("obs/camera_", "obs/tactile_"))]
    keys += [k for k in ("obs/joint_pos", "obs/state") if k in available]
    return sorted(keys)


def _spec_from(keys: Mapping[str, KeySpec], action: Mapping[str, Any], rate: float, profile: str,
               obs_keys: Sequence[str], action_key: str, where: str) -> PolicySpec:
    missing = [k for k in (*obs_keys, action_key) if k not in keys]
    if missing:
        raise SpecError(f"{where} has no stream {', '.join(missing)} (it has: {', '.join(sorted(keys))})")
    return PolicySpec(obs={k: keys[k] for k in obs_keys}, action_key=action_key,
                      joint_names=list(action["joint_names"]), lower=[float(x) for x in action["lower"]],
                      upper=[float(x) for x in action["upper"]], control_rate_hz=float(rate), profile=profile)


def spec_from_store(store, obs_keys: Sequence[str], action_key: str = "action") -> PolicySpec:
    a = store.attrs
    return _spec_from(store.keys, a["action"], a["control_rate_hz"], a.get("profile", {}).get("name", ""),
                      obs_keys, action_key, f"store {store.path}")


def spec_differences(expected: PolicySpec, actual: PolicySpec) -> list[str]:
    """What `actual` (a store or profile) lacks or does differently from what the policy expects.
    Joint limits are not compared: actions are clipped to the tighter of both at inference."""
    out = []
    if list(expected.joint_names) != list(actual.joint_names):
        out.append(f"joints differ: policy {expected.joint_names}, got {actual.joint_names}")
    if abs(expected.control_rate_hz - actual.control_rate_hz) > 1e-9:
        out.append(f"control rate differs: policy {expected.control_rate_hz:g} Hz, got {actual.control_rate_hz:g} Hz")
    for key, want in sorted(expected.obs.items()):
        have = actual.obs.get(key)
        if have is None:
            out.append(f"missing stream {key}")
        elif have.shape != want.shape or have.dtype != want.dtype:
            fmt = lambda s: "x".join(map(str, s.shape)) + f" {s.dtype}"  # noqa: E731
            out.append(f"{key}: policy expects {fmt(want)}, got {fmt(have)}")
    return out


def check_spec(expected: PolicySpec, actual: PolicySpec, what: str) -> None:
    problems = spec_differences(expected, actual)
    if problems:
        raise SpecError(f"{what} does not match the policy (trained on profile {expected.profile or '?'}): "
                        + "; ".join(problems))


def check_profile(expected: PolicySpec, profile) -> None:
    """Raise SpecError naming every difference between the policy's spec and `profile`."""
    from robot_rl.data.recording import store_layout

    keys, attrs = store_layout(profile, record_depth=True)
    actual = PolicySpec(obs={k: v for k, v in keys.items() if k.startswith("obs/")}, action_key=expected.action_key,
                        joint_names=list(attrs["action"]["joint_names"]), lower=attrs["action"]["lower"],
                        upper=attrs["action"]["upper"], control_rate_hz=attrs["control_rate_hz"], profile=profile.name)
    check_spec(expected, actual, f"profile {profile.name}")


def check_store(expected: PolicySpec, store) -> None:
    a = store.attrs
    actual = PolicySpec(obs={k: v for k, v in store.keys.items() if k.startswith("obs/")},
                        action_key=expected.action_key, joint_names=list(a["action"]["joint_names"]),
                        lower=a["action"]["lower"], upper=a["action"]["upper"],
                        control_rate_hz=a["control_rate_hz"], profile=a.get("profile", {}).get("name", ""))
    check_spec(expected, actual, f"store {store.path}")
