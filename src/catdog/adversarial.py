"""The optional adversarial term of the autoencoder: a PatchGAN discriminator and the decoder's hinge loss.

A flat 128-d bottleneck trained with pixel losses alone gives blurry reconstructions; VQGAN (Esser et
al. 2021) adds a PatchGAN discriminator (Isola et al. 2017) with the hinge loss, switched on after the
reconstruction has warmed up, and scales it by an adaptive weight that compares the gradients of
both losses at the decoder's last layer. Used only while training (`adv_weight` > 0); the evaluation
networks are never involved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catdog.config import AutoencoderConfig
from catdog.distributed import World, loss_module


class PatchDiscriminator(nn.Module):
    """x (B, 3, 32, 32) [, classes y (B,)] -> realness logits per patch (B, 1, 4, 4).

    With `n_classes`, a projection discriminator (Miyato & Koyama 2018): each patch's logit also gets
    the inner product of its last features with an embedding of y, so D judges whether x shows class y.
    """

    def __init__(self, width: int = 64, n_classes: int = 0):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), act(),                                          # 16 px
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), act(),      # 8 px
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.GroupNorm(8, 4 * width), act(),  # 4 px
            nn.Conv2d(4 * width, 1, 3, 1, 1))
        self.class_embedding = nn.Embedding(n_classes, 4 * width) if n_classes else None
        if n_classes:
            nn.init.zeros_(self.class_embedding.weight)          # starts as the unconditional D

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.class_embedding is None or y is None:
            return self.net(x)
        h = self.net[:-1](x)
        projection = (self.class_embedding(y)[:, :, None, None] * h).sum(1, keepdim=True)
        return self.net[-1](h) + projection

    def loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Hinge loss of the discriminator: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
        return F.relu(1 - self(real)).mean() + F.relu(1 + self(fake)).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: -mean D(fake)."""
    return -fake_logits.mean()


class AdversarialTerm:
    """The discriminator, its optimizer and the adaptive weight: `loss` for the decoder's update,
    `step` for the discriminator's, `state_dict` / `load_state_dict` for checkpoints."""

    def __init__(self, cfg: AutoencoderConfig, world: World, device: torch.device):
        self.cfg, self.world = cfg, world
        self.disc = PatchDiscriminator(cfg.disc_width).to(device)
        self.optimizer = torch.optim.AdamW(self.disc.parameters(), lr=cfg.ae_lr, betas=(0.5, 0.9))
        self.scale = torch.zeros((), device=device)              # the adaptive weight, refreshed
        self.disc_loss = loss_module(self.disc, world)           # inside DDP if distributed

    def active(self, step: int) -> bool:
        return step >= self.cfg.adv_start_step

    def loss(self, autoencoder, x: torch.Tensor, noise: torch.Tensor, x_hat: torch.Tensor, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """scale x the decoder's hinge loss on x_hat (discriminator frozen); the scale is recomputed
        every adv_scale_every_steps. Returns (term, its parts detached)."""
        self.disc.requires_grad_(False)
        if (step - self.cfg.adv_start_step) % self.cfg.adv_scale_every_steps == 0:
            self.scale.copy_(self.world.mean({"s": self.adaptive_weight(autoencoder, x, noise)})["s"])
        adv = generator_hinge_loss(self.disc(x_hat))
        return self.scale * adv, {"adv": adv.detach(), "adv_scale": self.scale}

    def adaptive_weight(self, autoencoder, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """VQGAN's adaptive weight on one batch: adv_weight x |grad rec| / |grad adv| at the decoder's
        last layer, so that `adv_weight` sets the adversarial gradient relative to the reconstruction
        one. A separate forward pass, so that the autoencoder's loss stays one compilable graph."""
        _, x_hat = autoencoder.reconstruct(x, noise)
        rec, _ = autoencoder.reconstruction_loss(x_hat, x)
        adv = generator_hinge_loss(self.disc(x_hat))
        last = autoencoder.decoder.output_conv().weight
        g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
        g_adv, = torch.autograd.grad(adv, last)
        return (self.cfg.adv_weight * g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, 1e4).detach()

    def step(self, x: torch.Tensor, x_hat: torch.Tensor, autocast) -> torch.Tensor:
        """One discriminator update, real images against these reconstructions; returns its loss."""
        self.disc.requires_grad_(True)
        with autocast:
            d_loss = self.disc_loss(x, x_hat.detach().clone())     # a copy: CUDA graphs reuse x_hat
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer.step()
        return d_loss.detach()

    def state_dict(self) -> dict:
        return {"discriminator": self.disc.state_dict(), "optimizer_d": self.optimizer.state_dict(),
                "adv_scale": float(self.scale)}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer_d"])
        self.scale.fill_(state["adv_scale"])
