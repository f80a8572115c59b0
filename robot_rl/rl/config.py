"""Every hyper-parameter of the residual off-policy learner in one typed config.

Defaults are the released ResFiT recipe (Ankile et al. 2025; see REFERENCES.md); named presets scale
it down for a CPU. A YAML/JSON file may name a preset and override single fields:

    preset: cpu_small
    actor_lr: 3.0e-6
    encoder: {image_size: 64}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robot_rl.config.typed import ConfigError, check, from_dict, load_yaml, to_dict


@dataclass
class EncoderConfig:
    """Observation encoder of the residual (trained only through the critic loss)."""

    obs_keys: list[str] = field(default_factory=list)  # [] = every obs/* key except depth images
    use_cameras: bool = True
    # + the frozen base's encoder features from the current chunk's start (what the base saw when it
    # planned the chunk): a residual without cameras still gets where the cube and target are
    base_features: bool = False
    low_dim_hidden: int = 256  # low-dim MLP (joint_pos, joint_vel, tactile flattened); 0 = no MLP
    low_dim_features: int = 64
    image_size: int = 84  # camera frames are resized (area) to image_size x image_size on ingestion
    conv_channels: int = 32
    image_features: int = 64  # per camera
    random_shift: int = 4  # +-pixels of random-shift augmentation during training (0 = off)

    def validate(self) -> None:
        check(self.low_dim_hidden >= 0, "must be >= 0", "low_dim_hidden")
        check(self.low_dim_features >= 1, "must be >= 1", "low_dim_features")
        check(self.image_size >= 16, "must be >= 16 pixels", "image_size")
        check(self.conv_channels >= 1, "must be >= 1", "conv_channels")
        check(self.image_features >= 1, "must be >= 1", "image_features")
        check(0 <= self.random_shift < self.image_size // 2, "must be in [0, image_size / 2)", "random_shift")
        for i, k in enumerate(self.obs_keys):
            check(k.startswith("obs/"), f"must be a store key starting with 'obs/', got {k!r}", f"obs_keys[{i}]")


@dataclass
class OffsetConfig:
    """`decision: offset` (rl/offset.py): a persistent correction that each decision changes by a step,
    acting only while the base commands `gate_joint` below `gate_below` (the gripper closed: carrying)
    and frozen from then on (placing: it must survive the release)."""

    gate_joint: str = ""  # "" = the profile's gripper joint
    gate_below: float = 0.02
    # "tcp_xy": the tool frame's horizontal position (m), mapped to `joints` each tick through the profile
    # kinematics' position Jacobian at the base's command; "joint": `joints` directly (rad / m)
    space: Literal["tcp_xy", "joint"] = "tcp_xy"
    joints: list[str] = field(default_factory=list)  # [] = every joint but the gate joint
    frame: str = ""  # tcp_xy: the kinematic chain's frame that moves ("" = its last, the tcp)
    range: float = 0.04  # max |offset| per dimension (m, rad)
    every: int = 4  # one decision per this many ticks of the open gate

    def validate(self) -> None:
        check(self.range > 0, "must be > 0", "range")
        check(self.every >= 1, "must be >= 1", "every")


@dataclass
class ResidualRLConfig:
    """TD3-style residual learner (ResFiT recipe values as defaults)."""

    # -- residual actor ---------------------------------------------------------------------------
    actor_hidden: int = 1024
    actor_layers: int = 2
    action_scale: float = 0.1  # residual = tanh(.) * action_scale in normalised action space
    phase_encoding: Literal["onehot", "scalar", "none"] = "onehot"  # position in the base chunk
    # "step": a residual every control tick (the recipe); "chunk": one residual per base chunk, chosen
    # at its first tick and held (the critic scores chunk decisions; n_step counts decisions, the
    # discount is gamma ** ticks; no phase input). rl/decisions.py says why.
    # "offset": a persistent correction the actor changes in steps while a gate is open (`offset:`,
    # rl/offset.py); action_scale is then the largest change per decision, as a fraction of offset.range.
    decision: Literal["step", "chunk", "offset"] = "step"
    chunk_length: int = 8  # executed steps per base chunk (H_exec); phase = step mod chunk_length
    action_bounds: Literal["data", "limits"] = "data"  # min-max of demo actions, or the profile's joint limits
    # -- critic ensemble --------------------------------------------------------------------------
    critic_hidden: int = 1024
    critic_layers: int = 2
    num_critics: int = 10
    target_subset: int = 2  # target = min over this many randomly chosen heads
    # -- TD3 --------------------------------------------------------------------------------------
    explore_std: float = 0.05  # truncated Gaussian on the residual (normalised units)
    explore_clip: float = 0.3
    # "chunk": one noise draw held for each base chunk instead of a fresh draw per tick. Per-tick noise
    # on position targets is largely low-passed away by the arm; a held offset moves where it goes.
    # (decision: chunk holds the whole residual, noise included, whatever this says.) "episode": one
    # draw for the whole episode, so each rollout tries one consistent correction (a drifted joint's).
    explore_hold: Literal["step", "chunk", "episode"] = "step"
    target_noise: float = 0.2  # target policy smoothing
    target_noise_clip: float = 0.3
    tau: float = 0.005
    gamma: float = 0.99
    n_step: int = 3
    critic_lr: float = 1e-4  # critic and encoder
    actor_lr: float = 1e-6  # deliberately tiny
    weight_decay: float = 0.01  # AdamW
    grad_clip: float = 1.0
    residual_l2: float = 0.0  # actor loss + residual_l2 * mean(residual^2 / action_scale^2): stay near the base
    actor_pessimism: float = 0.0  # the actor maximises mean - actor_pessimism * std over the critic heads
    # "q": ascend the critic (TD3, the recipe); "awac": advantage-weighted regression onto the batch's
    # actions (stays on the data where the critic is flat; docs/residual_rl.md)
    actor_loss: Literal["q", "awac"] = "q"
    awac_beta: float = 0.01  # advantage temperature (Q units); smaller = greedier
    # -- schedule ---------------------------------------------------------------------------------
    utd: float = 4  # critic updates per env step (decision: offset has ~0.1 decisions per step: < 1 fits)
    actor_every: int = 4  # one actor update per this many critic updates
    batch_size: int = 256
    demo_fraction: float = 0.5  # symmetric sampling: half online, half demo
    warmup_env_steps: int = 10_000  # base + uniform noise before any update
    warmup_noise: float = 0.2  # that noise: U(-warmup_noise, warmup_noise), normalised units (released code)
    critic_warmup_updates: int = 10_000  # critic-only updates (a burst right after the env warm-up)
    # -- data -------------------------------------------------------------------------------------
    online_capacity: int = 300_000
    demo_capacity: int = 100_000
    demos_successful_only: bool = True
    # project stored actions into base +- action_scale (demos, interventions): the critic then only
    # scores actions the actor can produce; unprojected, successful demos far outside the range teach it
    # that "far from the base" means success (docs/residual_rl.md)
    project_actions: bool = True
    interventions_to_demo: bool = True  # SERL: intervention episodes go to both buffers
    base_obs_horizon: int = 1  # frames per observation handed to base_action_fn when relabelling
    replay_device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda for low-dim, cpu with cameras
    seed: int = 0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    offset: OffsetConfig = field(default_factory=OffsetConfig)

    def validate(self) -> None:
        for name in ("actor_hidden", "actor_layers", "critic_hidden", "critic_layers", "num_critics", "n_step",
                     "actor_every", "batch_size", "chunk_length", "online_capacity", "demo_capacity",
                     "base_obs_horizon"):
            check(getattr(self, name) >= 1, "must be >= 1", name)
        check(0 < self.action_scale <= 1, "must be in (0, 1]", "action_scale")
        check(1 <= self.target_subset <= self.num_critics, f"must be in [1, num_critics={self.num_critics}]",
              "target_subset")
        for name in ("explore_std", "explore_clip", "target_noise", "target_noise_clip", "weight_decay", "residual_l2",
                     "warmup_env_steps", "critic_warmup_updates", "warmup_noise", "actor_pessimism"):
            check(getattr(self, name) >= 0, "must be >= 0", name)
        check(0 < self.tau <= 1, "must be in (0, 1]", "tau")
        check(0 < self.gamma <= 1, "must be in (0, 1]", "gamma")
        check(self.critic_lr > 0 and self.actor_lr > 0, "learning rates must be > 0",
              "critic_lr" if self.critic_lr <= 0 else "actor_lr")
        check(self.grad_clip > 0, "must be > 0", "grad_clip")
        check(self.utd > 0, "must be > 0", "utd")
        check(self.decision != "offset" or self.demo_fraction == 0, "decision: offset learns from rollouts "
              "only (a demo has no offset decisions): set demo_fraction: 0", "demo_fraction")
        check(self.awac_beta > 0, "must be > 0", "awac_beta")
        check(0 <= self.demo_fraction <= 1, "must be in [0, 1]", "demo_fraction")

    @property
    def demo_batch(self) -> int:
        return int(round(self.batch_size * self.demo_fraction))

    def replace(self, **changes: Any) -> "ResidualRLConfig":
        """A validated copy with some fields changed (nested: encoder={...})."""
        return config_from_dict(_merge(to_dict(self), changes))


# Named starting points; a file or dict picks one with `preset: NAME` and overrides fields.
PRESETS: dict[str, dict[str, Any]] = {
    "recipe": {},  # the published values (GPU-sized)
    # A 2-core CPU: same algorithm, ~16x fewer critic FLOPs per update, warm-ups scaled down 10x.
    "cpu_small": dict(actor_hidden=256, critic_hidden=256, num_critics=4, batch_size=128,
                         warmup_env_steps=1_000, critic_warmup_updates=1_000, online_capacity=100_000,
                         demo_capacity=50_000, encoder={"low_dim_hidden": 128, "image_size": 64,
                                                        "conv_channels": 16, "random_shift": 4}),
    # A 2-core CPU session in minutes: proprioception + tactile only (the base already sees the cameras
    # and its action is an input), and exploration and residual range sized for absolute joint-position
    # actions, where the recipe's noise (0.2 of the normalised range = ~0.3 rad per step) turns the
    # base's grasps into misses and a residual at its 0.1 bound (where the actor drives it within a few
    # thousand updates) costs most of the base's successes (docs/residual_rl.md, "Measured").
    "cpu_lowdim": dict(actor_hidden=256, critic_hidden=256, num_critics=4, batch_size=128, utd=2, actor_every=2,
                       action_scale=0.03, actor_lr=1e-5, warmup_env_steps=1_000, critic_warmup_updates=1_000, warmup_noise=0.03,
                       explore_std=0.015, explore_clip=0.05, target_noise=0.05, target_noise_clip=0.1,
                       online_capacity=100_000, demo_capacity=50_000,
                       encoder={"use_cameras": False, "low_dim_hidden": 128}),
    # A 2-core CPU session adapting a base to a robot that changed since its demonstrations (a drifted
    # joint; the demo's default): one residual per base chunk from the base's own features, range 0.15
    # (up to ~6 degrees of waist), one exploration draw per episode so each rollout tries one consistent
    # correction, an advantage-weighted actor that stays on what was tried, and no demo sampling: the
    # old robot's demonstrations would teach the old robot's actions. ~22 warm-up episodes before the
    # first actor update: after ~8 its direction was a coin flip (docs/residual_rl.md, "Drift").
    "cpu_adapt": dict(actor_hidden=256, critic_hidden=256, num_critics=4, batch_size=128, utd=1, actor_every=2,
                      decision="chunk", actor_loss="awac", demo_fraction=0.0, explore_hold="episode",
                      action_scale=0.15, actor_lr=1e-5, warmup_env_steps=3_000, critic_warmup_updates=3_000,
                      awac_beta=0.003, warmup_noise=0.05, explore_std=0.08, explore_clip=0.16, target_noise=0.02,
                      target_noise_clip=0.04, online_capacity=100_000, demo_capacity=50_000,
                      encoder={"use_cameras": False, "low_dim_hidden": 128, "base_features": True}),
    # A 2-core CPU session for a pick-and-place base whose misses are placements: one offset decision per
    # 4 ticks while it carries (tcp xy, +-7 cm, a change of at most 0.4 of that per decision), a penalty on
    # the change, ~0.4 critic updates per env step (~4 per decision). The study behind it: docs/residual_rl.md,
    # "Fewer, larger decisions" (its +-4 cm offset was normalised by +-7 cm, so it could reach that).
    "cpu_offset": dict(actor_hidden=256, critic_hidden=256, num_critics=4, batch_size=128, decision="offset",
                       action_scale=0.4, actor_lr=1e-4, residual_l2=0.5, demo_fraction=0.0, utd=0.4,
                       warmup_env_steps=3_000, critic_warmup_updates=2_000, warmup_noise=0.1, explore_std=0.05,
                       explore_clip=0.1, target_noise=0.02, target_noise_clip=0.05, online_capacity=100_000,
                       demo_capacity=10_000, offset={"range": 0.07},
                       encoder={"use_cameras": False, "low_dim_hidden": 128}),
    # Unit tests and smoke runs: seconds, not hours.
    "tiny": dict(actor_hidden=64, actor_layers=2, critic_hidden=64, num_critics=4, batch_size=64,
                    warmup_env_steps=100, critic_warmup_updates=100, online_capacity=10_000, demo_capacity=10_000,
                    chunk_length=4, encoder={"low_dim_hidden": 32, "low_dim_features": 16, "image_size": 24,
                                             "conv_channels": 8, "image_features": 16, "random_shift": 2}),
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset(name: str, **overrides: Any) -> ResidualRLConfig:
    """The named preset with optional field overrides (nested dicts merge)."""
    return config_from_dict({"preset": name, **overrides})


def config_from_dict(data: Any) -> ResidualRLConfig:
    """Typed config from plain data; an optional `preset` key picks the starting point."""
    data = dict(data or {})
    name = data.pop("preset", "recipe")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})", "preset")
    base = to_dict(ResidualRLConfig())
    return from_dict(ResidualRLConfig, _merge(_merge(base, PRESETS[name]), data))


def load_config(path: str | Path) -> ResidualRLConfig:
    """Config from a YAML/JSON file; errors name the file and field."""
    try:
        return config_from_dict(load_yaml(path))
    except ConfigError as e:
        raise e.located(path) if e.source is None else e from None


__all__ = ["EncoderConfig", "OffsetConfig", "ResidualRLConfig", "PRESETS", "preset", "config_from_dict", "load_config"]
