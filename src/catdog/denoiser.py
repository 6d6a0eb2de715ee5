"""The denoising network for a flat latent: (z_t, t, y) -> v prediction (Salimans & Ho 2022).

`ConditionalUNet` is a U-shaped residual MLP: an encoder path of residual blocks at decreasing
widths, a middle, and a decoder path that concatenates each encoder activation back in (long skip
connections, as a U-Net does for feature maps). Every block is conditioned on the sum of a
`TimeEmbedding` and a `ClassEmbedding` through adaptive LayerNorm (scale, shift and a gate, as in
DiT's adaLN-Zero), and the output layer starts at zero so the untrained network predicts 0.
Class `NULL_CLASS` (2) means "no label": classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from catdog.data import CLASS_NAMES


class TimeEmbedding(nn.Module):
    """Diffusion step t (B,) -> (B, dim): sinusoidal features (Transformer / DDPM) then an MLP."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]                        # (B, half)
        features = torch.cat([angles.cos(), angles.sin()], dim=1)
        if self.dim % 2:
            features = F.pad(features, (0, 1))
        return self.mlp(features)


class ClassEmbedding(nn.Module):
    """Class y (B,) in {0=cat, 1=dog, 2=null} -> (B, dim)."""

    def __init__(self, dim: int, n_classes: int = len(CLASS_NAMES)):
        super().__init__()
        self.embed = nn.Embedding(n_classes + 1, dim)                   # + the null class

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embed(y)


class ResidualBlock(nn.Module):
    """h + gate * MLP(adaLN(h)): LayerNorm modulated by the condition (scale, shift, gate)."""

    def __init__(self, width: int, emb_dim: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.SiLU(),
                                 nn.Linear(width * mlp_ratio, width))
        self.modulation = nn.Linear(emb_dim, 3 * width)
        nn.init.zeros_(self.modulation.weight)                          # adaLN-Zero: starts as identity
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(emb).chunk(3, dim=1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class ConditionalUNet(nn.Module):
    """(z_t (B, D), t (B,), y (B,)) -> v (B, D); U-shaped residual MLP with long skips."""

    def __init__(self, latent_dim: int, widths: tuple[int, ...] = (512, 256), blocks_per_level: int = 2,
                 emb_dim: int = 256):
        super().__init__()
        self.time_embedding = TimeEmbedding(emb_dim)
        self.class_embedding = ClassEmbedding(emb_dim)
        self.emb_act = nn.SiLU()
        self.input = nn.Linear(latent_dim, widths[0])
        n = blocks_per_level
        # down path: level l runs at widths[l]; a Linear narrows between levels
        self.down_blocks = nn.ModuleList(
            nn.ModuleList(ResidualBlock(w, emb_dim) for _ in range(n)) for w in widths)
        self.narrow = nn.ModuleList(nn.Linear(widths[l], widths[l + 1]) for l in range(len(widths) - 1))
        self.middle = ResidualBlock(widths[-1], emb_dim)
        # up path: each block first merges its skip (concat -> Linear), then a residual block
        self.merge = nn.ModuleList(
            nn.ModuleList(nn.Linear(2 * w, w) for _ in range(n)) for w in widths)
        self.up_blocks = nn.ModuleList(
            nn.ModuleList(ResidualBlock(w, emb_dim) for _ in range(n)) for w in widths)
        self.widen = nn.ModuleList(nn.Linear(widths[l + 1], widths[l]) for l in range(len(widths) - 1))
        self.out_norm = nn.LayerNorm(widths[0])
        self.output = nn.Linear(widths[0], latent_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.emb_act(self.time_embedding(t) + self.class_embedding(y))   # (B, emb_dim)
        h = self.input(z_t)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            if level > 0:
                h = self.narrow[level - 1](h)
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
        h = self.middle(h, emb)
        for level in reversed(range(len(self.up_blocks))):
            for merge, block in zip(self.merge[level], self.up_blocks[level]):
                h = block(merge(torch.cat([h, skips.pop()], dim=1)), emb)
            if level > 0:
                h = self.widen[level - 1](h)
        return self.output(self.out_norm(h))
