"""Discrete-time Gaussian diffusion on standardised latents z (DDPM, Ho et al. 2020).

Forward process (DDPM eq. 4):  z_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) noise,
t = 0..n_steps-1, with the cosine schedule of Nichol & Dhariwal 2021 (eq. 17, betas clipped at 0.999).
The network predicts v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) z_0 (Salimans & Ho 2022), which
stays well scaled at both ends of the schedule; the loss is MSE on v with Min-SNR-gamma weighting
(Hang et al. 2023).
Labels are dropped to the null class with probability `label_dropout` so that one network gives both
the conditional and the unconditional prediction. The same formulation serves the pixel-space refiner
(refiner.py): any tensor shape, and extra conditioning passed to the network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from catdog.data import NULL_CLASS
from catdog.denoiser import ConditionalUNet


def cosine_alpha_bar(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha_bar_t for t = 0..n_steps-1 (float64), Nichol & Dhariwal eq. 17 with clipped betas."""
    f = lambda u: math.cos((u / n_steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(t + 1) / f(t), max_beta) for t in range(n_steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class ConditionalDenoiseDiffusion(nn.Module):
    """Wraps a ConditionalUNet with the noise schedule, the training loss and the denoised prediction."""

    def __init__(self, model: ConditionalUNet, n_steps: int = 1000, label_dropout: float = 0.1,
                 min_snr_gamma: float = 5.0):
        super().__init__()
        self.model = model
        self.n_steps = n_steps
        self.label_dropout = label_dropout
        self.min_snr_gamma = min_snr_gamma
        self.register_buffer("alpha_bar", cosine_alpha_bar(n_steps).float(), persistent=False)

    def signal(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t (B,) shaped to broadcast against `like` (B, ...)."""
        return self.alpha_bar[t].view(-1, *[1] * (like.dim() - 1))

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample z_t ~ q(z_t | z_0) (DDPM eq. 4)."""
        ab = self.signal(t, z0)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * noise

    def draw(self, batch: int, shape: int | tuple[int, ...], generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random inputs of one training batch, drawn on the CPU from `generator` (exact resume, and
        the same numbers on every device and for every way of sharding the batch):
        steps t (B,), noise (B, *shape) and the label-dropout mask (B,)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        t = torch.randint(0, self.n_steps, (batch,), generator=generator)
        noise = torch.randn(batch, *shape, generator=generator)
        drop = torch.rand(batch, generator=generator) < self.label_dropout
        return t, noise, drop

    def loss(self, z0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             drop: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """Weighted MSE on v (`weighted`) for clean z0 (B, ...), classes y (B,), inputs from `draw`, and any
        extra conditioning `cond` the network takes after y."""
        # 1. label dropout to the null class (classifier-free guidance)
        y = torch.where(drop, torch.full_like(y, NULL_CLASS), y)
        # 2. noisy input and v target
        z_t = self.q_sample(z0, t, noise)
        ab = self.signal(t, z0)
        v_target = ab.sqrt() * noise - (1 - ab).sqrt() * z0
        # 3. weight: the v error is sqrt(SNR + 1) times the clean-latent error, so Min-SNR-gamma for a v target
        # is min(SNR, gamma) / (SNR + 1)
        per_example = (self.model(z_t, t, y, *cond) - v_target).pow(2).flatten(1).mean(dim=1)
        return self.weighted(per_example, t).mean()

    def weighted(self, per_example: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-example v-MSE (B,) at steps t (B,) times its loss weight."""
        if self.min_snr_gamma <= 0:
            return per_example
        snr = self.alpha_bar[t] / (1 - self.alpha_bar[t])
        return per_example * snr.clamp(max=self.min_snr_gamma) / (snr + 1)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """The loss weight of the v-MSE at steps t (B,)."""
        return self.weighted(torch.ones(len(t)), t)

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """The predicted clean `denoised` from z_t: sqrt(ab) z_t - sqrt(1 - ab) v."""
        ab = self.signal(t, z_t)
        v = self.model(z_t, t, y, *cond).float()
        return ab.sqrt() * z_t - (1 - ab).sqrt() * v


def build_diffusion(latent_dim: int, cfg) -> ConditionalDenoiseDiffusion:
    """The diffusion model for a DiffusionConfig."""
    unet = ConditionalUNet(latent_dim, cfg.unet_widths, cfg.unet_blocks, cfg.emb_dim)
    return ConditionalDenoiseDiffusion(unet, cfg.n_steps, cfg.label_dropout, cfg.min_snr_gamma)
