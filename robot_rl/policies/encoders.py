"""Observation encoders in plain torch (no torchvision): images, tactile grids, proprio.

`ObservationEncoder` builds one encoder per store key from the key's shape/dtype (uint8 HxWx3 =
camera, float rows x cols = taxel grid, float vector = proprio) and returns, per time step, the
concatenated features; the policy heads see the flattened observation history.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.policies.config import ImageEncoderConfig, ObservationConfig, ProprioEncoderConfig, TactileEncoderConfig


def stream_kind(key: str, shape: tuple[int, ...], dtype: str) -> str:
    """"image", "tactile" or "proprio" for a store key, from its per-step shape and dtype."""
    if dtype == "uint8" and len(shape) == 3 and shape[2] == 3:
        return "image"
    if dtype.startswith("float") and len(shape) == 2:
        return "tactile"
    if dtype.startswith("float") and len(shape) == 1:
        return "proprio"
    raise ValueError(f"{key}: no encoder for a stream of shape {tuple(shape)} and dtype {dtype} "
                     "(cameras are HxWx3 uint8, taxel grids rows x cols float, proprio a float vector)")


class BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm in place of BatchNorm."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image position of K learned keypoint maps: keeps *where* things are, which
    global pooling throws away (robomimic / diffusion_policy use it on top of ResNet-18)."""

    def __init__(self, channels: int, height: int, width: int, keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x).flatten(2)  # (B, K, H*W)
        return (logits.softmax(-1) @ self.grid).flatten(1)  # (B, 2K)


def resize_uint8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 NHWC frames resized (bilinear, antialiased) and rounded back to uint8. The dataset
    resizes the whole store once with this, and inference resizes live frames with it too, so
    both see bit-identical pixels while training skips a per-batch resize."""
    if tuple(img.shape[1:3]) == tuple(size):
        return img
    x = F.interpolate(img.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class ImageEncoder(nn.Module):
    """uint8 (B, H, W, 3) -> (B, out_dim). Resize + random crop (train) / centre crop (eval) inside,
    so callers always pass raw camera frames."""

    def __init__(self, cfg: ImageEncoderConfig, height: int, width: int):
        super().__init__()
        self.cfg = cfg
        h, w = (cfg.resize, cfg.resize) if cfg.resize else (height, width)
        self.size = (h, w)
        self.crop = (min(cfg.crop, h), min(cfg.crop, w)) if cfg.crop else (h, w)
        c0 = cfg.channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, c0, 3, 2, 1, bias=False), nn.GroupNorm(cfg.groups, c0), nn.ReLU()]
        if cfg.stem_pool:
            layers.append(nn.MaxPool2d(3, 2, 1))
        cin = c0
        for stage, (cout, n) in enumerate(zip(cfg.channels, cfg.blocks)):
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1, cfg.groups))
                cin = cout
        self.trunk = nn.Sequential(*layers)
        with torch.no_grad():
            fh, fw = self.trunk(torch.zeros(1, 3, *self.crop)).shape[-2:]
        if cfg.pool == "spatial_softmax":
            self.pool = SpatialSoftmax(cin, fh, fw, cfg.keypoints)
            pooled = 2 * cfg.keypoints
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = cin
        self.out = nn.Sequential(nn.Linear(pooled, cfg.out_dim), nn.ReLU())

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW in [-1, 1], resized and cropped."""
        x = resize_uint8(img, self.size).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
        ch, cw = self.crop
        if (ch, cw) == self.size:
            return x
        H, W = self.size
        if self.training:  # independent random crop per image (torch's CPU RNG even on a GPU: saved on resume)
            dev = x.device
            oy = torch.randint(0, H - ch + 1, (x.shape[0],)).to(dev)
            ox = torch.randint(0, W - cw + 1, (x.shape[0],)).to(dev)
            rows = (oy[:, None] + torch.arange(ch, device=dev))[:, :, None]
            cols = (ox[:, None] + torch.arange(cw, device=dev))[:, None, :]
            batch = torch.arange(x.shape[0], device=dev)[:, None, None]
            return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
        top, left = (H - ch) // 2, (W - cw) // 2
        return x[:, :, top:top + ch, left:left + cw]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.out(self.pool(self.trunk(self.preprocess(img))))


class TactileEncoder(nn.Module):
    """(B, rows, cols) normalised taxel forces -> (B, out_dim)."""

    def __init__(self, cfg: TactileEncoderConfig, rows: int, cols: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, cfg.channels, 3, 1, 1), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(cfg.channels * rows * cols, cfg.out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x.unsqueeze(1)).flatten(1))


class ProprioEncoder(nn.Module):
    def __init__(self, cfg: ProprioEncoderConfig, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ObservationEncoder(nn.Module):
    """{key: (B, T, *shape)} -> (B, T * step_dim). Images arrive as uint8; float streams already
    normalised by the policy's Normalizer."""

    def __init__(self, cfg: ObservationConfig, obs_spec: Mapping[str, tuple[tuple[int, ...], str]]):
        super().__init__()
        self.keys = sorted(obs_spec)  # fixed order: the feature layout must not depend on dict order
        self.kinds = {k: stream_kind(k, tuple(s), d) for k, (s, d) in obs_spec.items()}
        self.encoders = nn.ModuleDict()
        self._module_of: dict[str, str] = {}
        self.step_dim = 0
        shared: ImageEncoder | None = None
        sizes = {tuple(obs_spec[k][0]) for k in self.keys if self.kinds[k] == "image"}
        if cfg.image.share and not cfg.image.resize and len(sizes) > 1:
            raise ValueError("image.share needs cameras of one size (or image.resize > 0)")
        for i, key in enumerate(self.keys):
            shape, kind = tuple(obs_spec[key][0]), self.kinds[key]
            if kind == "image":
                if cfg.image.share and shared is not None:
                    self._module_of[key] = self._module_of[next(k for k in self.keys if self.kinds[k] == "image")]
                    self.step_dim += cfg.image.out_dim
                    continue
                enc: nn.Module = ImageEncoder(cfg.image, shape[0], shape[1])
                shared = enc
                dim = cfg.image.out_dim
            elif kind == "tactile":
                enc, dim = TactileEncoder(cfg.tactile, *shape), cfg.tactile.out_dim
            else:
                enc, dim = ProprioEncoder(cfg.proprio, shape[0]), cfg.proprio.out_dim
            name = f"s{i}"  # ModuleDict names cannot contain '/'
            self.encoders[name] = enc
            self._module_of[key] = name
            self.step_dim += dim

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = []
        for key in self.keys:
            x = obs[key]
            b, t = x.shape[:2]
            y = self.encoders[self._module_of[key]](x.reshape(b * t, *x.shape[2:]))
            feats.append(y.reshape(b, t, -1))
        return torch.cat(feats, -1).flatten(1)
