"""1-D temporal conditional UNet (the architecture of diffusion_policy's ConditionalUnet1D).

Convolutions run over the chunk's time axis with actions as channels. Every residual block is
FiLM-conditioned (per-channel scale and bias) on [diffusion-step embedding, observation features].
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], -1)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, groups: int):
        super().__init__(nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish())


class FiLMResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.block1 = ConvBlock(cin, cout, kernel, groups)
        self.block2 = ConvBlock(cout, cout, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.block1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        y = self.block2(scale * y + bias)
        return y + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """(B, T, action_dim) noisy chunk, (B,) timesteps, (B, cond_dim) features -> (B, T, action_dim)."""

    def __init__(self, action_dim: int, cond_dim: int, down_dims: list[int], kernel: int = 5, groups: int = 8,
                 step_embed_dim: int = 64):
        super().__init__()
        self.step_encoder = nn.Sequential(SinusoidalEmbedding(step_embed_dim), nn.Linear(step_embed_dim, 4 * step_embed_dim),
                                          nn.Mish(), nn.Linear(4 * step_embed_dim, step_embed_dim))
        c = step_embed_dim + cond_dim
        dims = [action_dim, *down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (din, dout) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([FiLMResBlock(din, dout, c, kernel, groups),
                                            FiLMResBlock(dout, dout, c, kernel, groups),
                                            nn.Conv1d(dout, dout, 3, 2, 1) if not last else nn.Identity()]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([FiLMResBlock(mid, mid, c, kernel, groups), FiLMResBlock(mid, mid, c, kernel, groups)])
        self.up = nn.ModuleList()
        for din, dout in reversed(pairs[1:]):  # each undoes one halving (the top skip is not reused)
            self.up.append(nn.ModuleList([FiLMResBlock(2 * dout, din, c, kernel, groups),
                                          FiLMResBlock(din, din, c, kernel, groups),
                                          nn.ConvTranspose1d(din, din, 4, 2, 1)]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.step_encoder(t), features], -1)
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, cond), cond)
            skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, cond)
        for res1, res2, up in self.up:
            h = torch.cat([h, skips.pop()], 1)
            h = up(res2(res1(h, cond), cond))
        return self.final(h).transpose(1, 2)
