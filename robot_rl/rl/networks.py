"""Residual actor, batched critic ensemble, and the deployable residual policy (encoder + actor +
action normaliser) whose architecture is described by one JSON-able dict.

The critic ensemble is ONE network: every layer holds weights of shape (heads, in, out) and runs
all heads in a single (b)mm, with a per-head LayerNorm. A loop over per-head modules launches heads x
layers small kernels and autograd nodes per step; the batched form is a few big GEMMs.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.data.schema import KeySpec
from robot_rl.rl.config import EncoderConfig, ResidualRLConfig
from robot_rl.rl.encoder import ObsEncoder
from robot_rl.rl.normalize import ActionNormalizer

ARCHITECTURE_FORMAT = "robot_rl.residual_actor"
ARCHITECTURE_VERSION = 1


# ---- phase -------------------------------------------------------------------------------------

def phase_dim(encoding: str, chunk_length: int) -> int:
    return {"onehot": chunk_length, "scalar": 1, "none": 0}[encoding]


def phase_features(phase: torch.Tensor, encoding: str, chunk_length: int) -> torch.Tensor:
    """Position in the base's action chunk (int steps since the chunk started) as network input."""
    phase = phase.long().remainder(chunk_length)
    if encoding == "onehot":
        return F.one_hot(phase, chunk_length).float()
    if encoding == "scalar":
        return (phase.float() / max(chunk_length - 1, 1) * 2 - 1).unsqueeze(-1)
    return phase.new_zeros((phase.shape[0], 0), dtype=torch.float32)


# ---- critic ensemble ---------------------------------------------------------------------------

class EnsembleLinear(nn.Module):
    """`heads` independent Linear layers as one (heads, in, out) weight; nn.Linear's init per head."""

    def __init__(self, heads: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(heads, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(heads, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if heads is not None:  # a subset of heads: gather their weights, compute only those
            w, b = w.index_select(0, heads), b.index_select(0, heads)
        if x.dim() == 2:  # the first layer's input is shared by all heads: broadcast, no copy per head
            x = x.unsqueeze(0).expand(w.shape[0], *x.shape)
        return torch.baddbmm(b, x, w)


class _HeadTiledLayerNormReLU(torch.autograd.Function):
    """relu(layer_norm(x) * w + b) with per-head affine, computed one head's (batch, features) slab
    at a time: on a CPU each slab stays in cache through normalise, affine and ReLU (and their
    backward), where whole-ensemble elementwise passes would stream every activation through DRAM
    three times. Same math as the batched path; the matmuls stay batched."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x = x.contiguous()
        d = x.shape[-1]
        y = torch.empty_like(x)
        mean = x.new_empty(x.shape[:-1] + (1,))
        rstd = x.new_empty(x.shape[:-1] + (1,))
        for h in range(x.shape[0]):
            out, mean[h], rstd[h] = torch.native_layer_norm(x[h], (d,), weight[h, 0], bias[h, 0], eps)
            torch.clamp_min(out, 0.0, out=y[h])
        ctx.save_for_backward(x, weight, bias, y, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, bias, y, mean, rstd = ctx.saved_tensors
        grad = grad.contiguous()
        d = x.shape[-1]
        gx, gw, gb = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)
        for h in range(x.shape[0]):
            g = torch.ops.aten.threshold_backward(grad[h], y[h], 0.0)
            gx[h], gw[h, 0], gb[h, 0] = torch.ops.aten.native_layer_norm_backward(
                g, x[h], (d,), mean[h], rstd[h], weight[h, 0], bias[h, 0], [True, True, True])
        return gx, gw, gb, None


class EnsembleLayerNormReLU(nn.Module):
    """Per-head LayerNorm (separate affine per head) followed by ReLU. `tiled`: None = the
    cache-tiled kernel on CPU for activations bigger than a core's L2 share, else fully batched
    elementwise ops (always on GPU: one kernel per op)."""

    TILE_ABOVE = 1 << 18  # elements (1 MB of fp32): below this the whole tensor stays in cache anyway

    def __init__(self, heads: int, features: int, eps: float = 1e-5, tiled: bool | None = None):
        super().__init__()
        self.eps, self.tiled = eps, tiled
        self.weight = nn.Parameter(torch.ones(heads, 1, features))
        self.bias = nn.Parameter(torch.zeros(heads, 1, features))

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if heads is not None:
            w, b = w.index_select(0, heads), b.index_select(0, heads)
        tiled = self.tiled
        if tiled is None:
            tiled = x.device.type == "cpu" and x.numel() > self.TILE_ABOVE
        if tiled:
            return _HeadTiledLayerNormReLU.apply(x, w, b, self.eps)
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:], eps=self.eps), w).relu_()


class CriticEnsemble(nn.Module):
    """Q heads over [features, base action, phase, combined action] -> (heads, batch)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, heads: int):
        super().__init__()
        self.heads, self.in_dim = heads, in_dim
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            mods += [EnsembleLinear(heads, dim, hidden), EnsembleLayerNormReLU(heads, hidden)]
            dim = hidden
        mods.append(EnsembleLinear(heads, dim, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        """Q of every head (heads=None) or of the given head indices only -> (len, batch)."""
        for layer in self.net:
            x = layer(x, heads)
        return x.squeeze(-1)


# ---- actor -------------------------------------------------------------------------------------

class ResidualActor(nn.Module):
    """MLP (LayerNorm, ReLU) -> tanh * scale, in normalised action units. The last layer is zero
    initialised, so the residual is exactly 0 (base + residual == base) until the actor learns."""

    def __init__(self, in_dim: int, action_dim: int, hidden: int, layers: int, action_scale: float):
        super().__init__()
        self.action_scale = action_scale
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            mods += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
            dim = hidden
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(dim, action_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.body(x))) * self.action_scale


# ---- exploration -------------------------------------------------------------------------------

def exploration_noise(shape, kind: str, *, std: float, clip: float, scale: float,
                      generator: torch.Generator | None, device) -> torch.Tensor:
    """"gaussian": N(0, std) truncated at +-clip (TD3); "uniform": U(-scale, scale) (the env
    warm-up's base + uniform noise); "none": zeros. Normalised action units."""
    if kind == "none":
        return torch.zeros(shape, device=device)
    if kind == "uniform":
        u = torch.rand(shape, generator=generator, device=device)
        return (u * 2 - 1) * scale
    if kind == "gaussian":
        return (torch.randn(shape, generator=generator, device=device) * std).clamp_(-clip, clip)
    raise ValueError(f"exploration kind must be none|uniform|gaussian, got {kind!r}")


# ---- the deployable residual policy ------------------------------------------------------------

class PolicyOutput(NamedTuple):
    action: torch.Tensor  # executed action, raw units: unnormalise(clamp(base_n + residual_n))
    residual: torch.Tensor  # action - base, raw units (what /policy/residual and the store carry)
    residual_normalized: torch.Tensor  # actor output (+ exploration), normalised units


class ResidualPolicy(nn.Module):
    """Encoder + actor + action normaliser: everything the policy node runs, and exactly what
    `export_actor_weights` ships (its state_dict)."""

    def __init__(self, arch: Mapping[str, Any]):
        super().__init__()
        self.arch = json.loads(json.dumps(arch))
        obs_spec = {k: KeySpec(tuple(v["shape"]), v["dtype"]) for k, v in arch["obs"].items()}
        self.encoder = ObsEncoder(obs_spec, EncoderConfig(**arch["encoder"]))
        self.phase_encoding, self.chunk_length = arch["phase_encoding"], arch["chunk_length"]
        n = arch["action_dim"]
        in_dim = self.encoder.out_dim + n + phase_dim(self.phase_encoding, self.chunk_length)
        self.actor = ResidualActor(in_dim, n, arch["actor_hidden"], arch["actor_layers"], arch["action_scale"])
        self.action_norm = ActionNormalizer([-1.0] * n, [1.0] * n, arch["action_scale"])

    @property
    def action_scale(self) -> float:
        return float(self.arch["action_scale"])

    def actor_input(self, features: torch.Tensor, base_n: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, base_n, phase_features(phase, self.phase_encoding, self.chunk_length)], dim=1)

    def residual(self, features: torch.Tensor, base_n: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return self.actor(self.actor_input(features, base_n, phase))

    @torch.no_grad()
    def forward(self, obs: Mapping[str, torch.Tensor], base_action: torch.Tensor, phase: torch.Tensor,
                explore: str = "none", std: float = 0.05, clip: float = 0.3, uniform: float = 0.2,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> PolicyOutput:
        """One control tick (batched): raw base action in, executed raw action out. explore:
        none | gaussian (std, clip) | uniform (+-uniform, the env warm-up). `noise`: use this
        exploration noise (normalised) instead of drawing one (a caller holding it for a chunk)."""
        base_n = self.action_norm.normalize(base_action.float())
        res = self.residual(self.encoder(obs), base_n, phase)
        if noise is None:
            noise = exploration_noise(res.shape, explore, std=std, clip=clip, scale=uniform,
                                      generator=generator, device=res.device)
        res = res + noise.to(res.device)
        action = self.action_norm.combine(base_action.float(), res)
        return PolicyOutput(action, action - base_action, res)


def architecture(cfg: ResidualRLConfig, obs_spec: Mapping[str, KeySpec], action_dim: int) -> dict[str, Any]:
    """What must match between learner and policy node for weights to load (JSON-able)."""
    from robot_rl.config.typed import to_dict

    arch = {
        "format": ARCHITECTURE_FORMAT, "format_version": ARCHITECTURE_VERSION,
        "obs": {k: s.to_json() for k, s in sorted(obs_spec.items())}, "action_dim": int(action_dim),
        "action_scale": float(cfg.action_scale), "actor_hidden": cfg.actor_hidden, "actor_layers": cfg.actor_layers,
        "phase_encoding": cfg.phase_encoding, "chunk_length": cfg.chunk_length, "encoder": to_dict(cfg.encoder),
    }
    if cfg.decision != "step":  # taken at a chunk's first tick or by the offset's gate: no phase input.
        arch.update(decision=cfg.decision, phase_encoding="none")  # (No key for "step": older weights load.)
    if cfg.decision == "offset":  # the node must cut episodes into the decisions the learner scores
        arch["offset"] = to_dict(cfg.offset)
    return arch


def architecture_json(arch: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces) so equal architectures compare equal as strings."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def critic_input_dim(policy: ResidualPolicy) -> int:
    n = policy.arch["action_dim"]
    return policy.encoder.out_dim + 2 * n + phase_dim(policy.phase_encoding, policy.chunk_length)
