"""Diffusion policy: 1-D temporal conditional UNet, DDPM training, DDIM inference, EMA weights."""
from robot_rl.policies.diffusion.config import DiffusionConfig, DiffusionTrainConfig
from robot_rl.policies.diffusion.model import DiffusionModel

__all__ = ["DiffusionConfig", "DiffusionModel", "DiffusionTrainConfig"]
