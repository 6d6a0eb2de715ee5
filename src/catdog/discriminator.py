"""Patch discriminator and hinge losses: an optional adversarial term that sharpens the decoder.

A flat 128-d bottleneck trained with MSE/L1 alone gives blurry reconstructions; VQGAN (Esser et al.
2021) and Stable Diffusion's autoencoder add a PatchGAN discriminator (Isola et al. 2017) with the
hinge loss, switched on after the reconstruction has warmed up. Used only while training the
autoencoder (`adv_weight` > 0); the evaluation networks are never involved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """x (B, 3, 32, 32) -> realness logits per patch (B, 1, 4, 4)."""

    def __init__(self, width: int = 64):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), act(),                                          # 16 px
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), act(),      # 8 px
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.GroupNorm(8, 4 * width), act(),  # 4 px
            nn.Conv2d(4 * width, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Hinge loss of the discriminator: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
        return F.relu(1 - self(real)).mean() + F.relu(1 + self(fake)).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: -mean D(fake)."""
    return -fake_logits.mean()
