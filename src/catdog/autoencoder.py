"""Conv autoencoder: 32x32 RGB <-> flat latent of `latent_dim`, with a latent classifier and Center Loss.

Encoder: conv stem, Convolutional Attention Blocks (CAB: two 3x3 convs + a Channel Attention Layer,
CAL, i.e. squeeze-and-excitation as in RCAN, Zhang et al. 2018) at 32/16/8/4 px, strided-conv
downsampling, then a linear map to the latent. The latent is layer-normalised (unit RMS, zero mean
across dims) so that no loss can shrink or blow up its scale.
Decoder: linear -> 4x4 map, then transposed convolutions ("deconvolutions") with CABs back up.
The classifier's and the Center Loss's gradients reach the encoder, so they shape the latent. The
module also owns the per-dimension latent mean/std measured on the training set, which turn a raw
latent into the standardised `z` that diffusion works on, and batched uint8-in / uint8-out inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import numpy as np

from catdog.config import AutoencoderConfig, norm_groups
from catdog.data import CLASS_NAMES, in_batches, to_model_range, to_uint8


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels)


class ChannelAttentionLayer(nn.Module):
    """CAL: rescale channels by a gate computed from their global average (SE block)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.SiLU(),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.gate(h)


class ConvAttentionBlock(nn.Module):
    """CAB: h + CAL(conv(silu(norm(conv(silu(norm(h))))))), a pre-activation residual block."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  ChannelAttentionLayer(channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c = cfg.ae_channels                                   # widths at 32, 16, 8, 4 px
        layers: list[nn.Module] = [nn.Conv2d(3, c[0], 3, padding=1)]
        for level in range(len(c)):
            layers += [ConvAttentionBlock(c[level]) for _ in range(cfg.ae_blocks)]
            if level < len(c) - 1:                            # downsample 2x, widen
                layers.append(nn.Conv2d(c[level], c[level + 1], 4, stride=2, padding=1))
        layers += [group_norm(c[-1]), nn.SiLU(), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.to_latent = nn.Linear(c[-1] * 4 * 4, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, 32, 32) in [-1, 1] -> raw latent (B, latent_dim), zero mean / unit RMS per row."""
        h = self.to_latent(self.net(x))
        return F.layer_norm(h, h.shape[-1:])


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c = cfg.ae_channels
        self.from_latent = nn.Linear(cfg.latent_dim, c[-1] * 4 * 4)
        self.width = c[-1]
        layers: list[nn.Module] = []
        for level in reversed(range(len(c))):
            layers += [ConvAttentionBlock(c[level]) for _ in range(cfg.ae_blocks)]
            if level > 0:                                     # deconvolution: upsample 2x, narrow
                layers.append(nn.ConvTranspose2d(c[level], c[level - 1], 4, stride=2, padding=1))
        layers += [group_norm(c[0]), nn.SiLU(), nn.Conv2d(c[0], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent (B, latent_dim) -> x (B, 3, 32, 32), nominally in [-1, 1] (not clamped)."""
        h = self.from_latent(latent).view(-1, self.width, 4, 4)
        return self.net(h)

    def output_conv(self) -> nn.Conv2d:
        """The last convolution, where VQGAN's adaptive weight compares gradients."""
        return next(m for m in reversed(self.net) if isinstance(m, nn.Conv2d))


class CenterLoss(nn.Module):
    """Center Loss (Wen et al. 2016): mean squared distance of each latent to its class centre.

    The centres are learnable parameters; both they and the encoder receive gradients, so the loss
    pulls each class together in latent space.
    """

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, dim) * 0.1)

    def forward(self, latent: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (latent - self.centers[y]).pow(2).mean()


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, l1_weight: float
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The pixel loss MSE + l1_weight x L1; returns (loss, its parts)."""
    mse, l1 = F.mse_loss(x_hat, x), F.l1_loss(x_hat, x)
    return mse + l1_weight * l1, {"mse": mse, "l1": l1}


class SimpleAutoencoder(nn.Module):
    """Encoder + decoder + latent classifier + Center Loss + measured latent statistics."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        n_classes = len(CLASS_NAMES)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.classifier = nn.Sequential(nn.Linear(cfg.latent_dim, 256), nn.SiLU(), nn.Linear(256, n_classes))
        self.center_loss = CenterLoss(n_classes, cfg.latent_dim)
        # per-dimension statistics of training latents, set by `set_latent_stats` after training
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, 32, 32) in [-1, 1] -> raw latent (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent (B, latent_dim) -> x (B, 3, 32, 32)."""
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x -> (reconstruction, raw latent, class logits)."""
        latent = self.encode(x)
        return self.decode(latent), latent, self.classifier(latent)

    def loss(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Reconstruction (MSE + L1) + cls_weight x latent classification CE + center_weight x Center
        Loss. Returns (total, its parts detached, x_hat).

        `noise` (B, latent_dim), if given, is added to the latent before decoding only, so the
        decoder learns to tolerate the small errors a diffusion sample will have.
        """
        cfg = self.cfg
        latent, x_hat = self.reconstruct(x, noise)
        rec, parts = self.reconstruction_loss(x_hat, x)
        ce = F.cross_entropy(self.classifier(latent), y)
        center = self.center_loss(latent, y)
        total = rec + cfg.cls_weight * ce + cfg.center_weight * center
        parts = {"loss": total, **parts, "ce": ce, "center": center}
        return total, {k: v.detach() for k, v in parts.items()}, x_hat   # tensors: no GPU sync

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE + l1_weight x L1; returns (loss, its parts)."""
        return reconstruction_loss(x_hat, x, self.cfg.l1_weight)

    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (raw latent, x_hat), with latent_noise_std x `noise` added before decoding if given."""
        latent = self.encode(x)
        return latent, self.decode(latent if noise is None else latent + self.cfg.latent_noise_std * noise)

    # --- standardised latents z, the space diffusion works in ---------------------------------
    @torch.no_grad()
    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Store per-dimension mean/std of raw training latents (N, latent_dim)."""
        self.latent_mean.copy_(latents.mean(0))
        self.latent_std.copy_(latents.std(0).clamp_min(1e-4))

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent -> z with per-dimension zero mean, unit std on the training set."""
        return (latent - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z -> raw latent (inverse of normalize)."""
        return z * self.latent_std + self.latent_mean

    # --- batched inference on uint8 images, for every caller that is not training ---------------
    @torch.no_grad()
    def encode_images(self, images: np.ndarray, flip: bool = False, batch_size: int = 500) -> torch.Tensor:
        """Raw latents (N, latent_dim) on the CPU of uint8 images (N, 32, 32, 3), optionally mirrored."""
        device = self.latent_mean.device
        def encode(batch):
            x = to_model_range(batch).to(device)
            return self.encode(x.flip(3) if flip else x).float().cpu()
        return torch.cat(in_batches(encode, images, batch_size))

    @torch.no_grad()
    def predict_classes(self, images) -> tuple[int, ...]:
        """The latent classifier's class (0 cat, 1 dog) of each uint8 image (N, 32, 32, 3)."""
        latents = self.encode_images(np.stack(images)).to(self.latent_mean.device)
        return tuple(int(c) for c in self.classifier(latents).argmax(1).tolist())

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Standardised latents z (N, D) -> x (N, 3, 32, 32) clamped to [-1, 1], on z's device."""
        return torch.cat(in_batches(lambda zb: self.decode(self.denormalize(zb)).clamp(-1, 1), z, batch_size))

    @torch.no_grad()
    def reconstruct_x(self, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
        """x_hat (N, 3, 32, 32), float and unclamped, of uint8 images through encoder and decoder."""
        device = self.latent_mean.device
        return torch.cat(in_batches(lambda batch: self.decode(self.encode(to_model_range(batch).to(device))),
                                    images, batch_size))

    def reconstruct_images(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """uint8 reconstructions (N, 32, 32, 3) of uint8 images through encoder and decoder."""
        return to_uint8(self.reconstruct_x(images, batch_size))
