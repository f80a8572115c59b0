"""Residual off-policy RL core (plain torch, no ROS): config, networks, replay, TD3 agent, checkpoints.

The learner node wraps `ResidualTD3` + `StoreFeeder`; the policy node wraps `ResidualPolicy` loaded
with `policy_from_weights`. See docs/residual_rl.md.
"""
from robot_rl.rl.agent import ResidualTD3, default_device
from robot_rl.rl.checkpoint import (
    WeightsRejected, export_actor_weights, load_actor_weights, load_checkpoint, policy_from_weights,
    read_residual_weights, save_checkpoint,
)
from robot_rl.rl.config import PRESETS, EncoderConfig, ResidualRLConfig, config_from_dict, load_config, preset
from robot_rl.rl.feed import FeedResult, StoreFeeder, agent_from_store, ingest, make_buffers
from robot_rl.rl.networks import CriticEnsemble, PolicyOutput, ResidualActor, ResidualPolicy, architecture
from robot_rl.rl.normalize import ActionNormalizer
from robot_rl.rl.relabel import RelabelStats, relabel_episodes
from robot_rl.rl.replay import ReplayBuffer, n_step_returns, sample_batch

__all__ = [
    "ActionNormalizer", "CriticEnsemble", "EncoderConfig", "FeedResult", "PRESETS", "PolicyOutput", "RelabelStats",
    "ReplayBuffer", "ResidualActor", "ResidualPolicy", "ResidualRLConfig", "ResidualTD3", "StoreFeeder",
    "WeightsRejected", "agent_from_store", "architecture", "config_from_dict", "default_device",
    "export_actor_weights", "ingest", "load_actor_weights", "load_checkpoint", "load_config", "make_buffers",
    "n_step_returns", "policy_from_weights", "preset", "read_residual_weights", "relabel_episodes", "sample_batch", "save_checkpoint",
]
