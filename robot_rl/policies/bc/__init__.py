"""Behaviour cloning: observation history -> action chunk by regression."""
from robot_rl.policies.bc.config import BCConfig, BCTrainConfig
from robot_rl.policies.bc.model import BCModel

__all__ = ["BCConfig", "BCModel", "BCTrainConfig"]
