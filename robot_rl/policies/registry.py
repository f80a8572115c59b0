"""Policy name -> (policy config, train config, model) classes; one place to add a policy."""
from __future__ import annotations

from robot_rl.config.typed import ConfigError


def policy_classes(name: str) -> tuple[type, type, type]:
    if name == "bc":
        from robot_rl.policies.bc import BCConfig, BCModel, BCTrainConfig

        return BCConfig, BCTrainConfig, BCModel
    if name == "diffusion":
        from robot_rl.policies.diffusion import DiffusionConfig, DiffusionModel, DiffusionTrainConfig

        return DiffusionConfig, DiffusionTrainConfig, DiffusionModel
    raise ConfigError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})", "policy")


POLICY_NAMES = ("bc", "diffusion")
