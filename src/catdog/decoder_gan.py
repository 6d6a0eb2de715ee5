"""The decoder stage's objective: a data-efficient adversarial fine-tune of the decoder (encoder frozen).

A pixel loss on a 128-d code returns the average image compatible with it, a blur. The decoder is
therefore fine-tuned with a loss that rewards plausible detail, and because 10,000 images are few
for a GAN, with the data-efficient parts that make it pay at CPU lengths (docs/experiments.md):

    decoder loss = pixel (MSE + L1)                                    the autoencoder's own loss
                 + w_p * random-CNN perceptual distance                Ulyanov et al. 2018
                 + w_f * discriminator feature matching                Wang et al. 2018 (pix2pixHD)
                 + scale * PatchGAN hinge loss on DiffAugment(x_hat)   VQGAN's adaptive weight
    discriminator = hinge on DiffAugment(real) vs DiffAugment(fake)    Zhao et al. 2020
                  + R1 penalty on real images, every R1_EVERY steps    Mescheder et al. 2018

With `decoder_disc_classes` the discriminator is a projection discriminator that also sees the class,
so the hinge term rewards images that show their class, not only sharp ones.

w_p and w_f are set on the first batch so that each term starts at the size of the pixel loss, then
kept (they are part of the checkpoint). Only training uses this; the evaluation networks never do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catdog.adversarial import PatchDiscriminator, generator_hinge_loss
from catdog.autoencoder import reconstruction_loss
from catdog.config import Config
from catdog.data import CLASS_NAMES, random_crops
from catdog.distributed import World

R1_EVERY = 4                 # lazy R1 (StyleGAN2): every 4th step, scaled by 4
ADAPTIVE_EVERY = 25          # steps between refreshes of the adaptive weight (a second backward pass)


# --- DiffAugment: differentiable colour, translation and cutout, drawn per image ----------------
def draw_augment(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random parameters for `augment` of n images, from the (CPU) generator."""
    def r(*shape):
        return torch.rand(*shape, generator=generator)
    return {"brightness": r(n, 1, 1, 1) - 0.5, "saturation": 2 * r(n, 1, 1, 1), "contrast": r(n, 1, 1, 1) + 0.5,
            "shift": torch.randint(0, 9, (n, 2), generator=generator),      # +-4 px (1/8), zero padded
            "hole": torch.randint(0, 32, (n, 2), generator=generator)}      # centre of a 16 px square (1/2)


def augment(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """x (B, 3, 32, 32) with brightness, saturation, contrast, translation and cutout applied."""
    x = x + p["brightness"]
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * p["saturation"] + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * p["contrast"] + mean
    x = random_crops(F.pad(x, (4, 4, 4, 4)), p["shift"], 32)
    grid = torch.arange(32, device=x.device)
    rows = (grid[None, :] - p["hole"][:, :1]).abs() < 8                      # (B, 32)
    cols = (grid[None, :] - p["hole"][:, 1:]).abs() < 8
    return x * ~(rows[:, :, None] & cols[:, None, :])[:, None]


def shard_augment(p: dict[str, torch.Tensor], shard: slice, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v[shard].to(device) for k, v in p.items()}


class RandomCNN(nn.Module):
    """A fixed random-weight CNN (never trained, seeded): the distance of channel-normalised features
    at four layers (LPIPS-style, without learned weights) compares images by local structure."""

    def __init__(self, seed: int = 1234):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        widths = ((3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1))
        self.layers = nn.ModuleList([nn.Conv2d(a, b, 3, stride=s, padding=1) for a, b, s in widths])
        for conv in self.layers:
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a.new_zeros(())
        for conv in self.layers:
            a, b = F.relu(conv(a)), F.relu(conv(b))
            total = total + (F.normalize(a, dim=1) - F.normalize(b, dim=1)).pow(2).sum(1).mean()
        return total


def disc_features(disc: PatchDiscriminator, x: torch.Tensor) -> list[torch.Tensor]:
    """The discriminator's activations after each LeakyReLU (its learned perceptual features)."""
    features = []
    for layer in disc.net:
        x = layer(x)
        if isinstance(layer, nn.LeakyReLU):
            features.append(x)
    return features


class DecoderObjective:
    """The discriminator, its optimizer, the random CNN, the term weights and the adaptive weight:
    `decoder_loss` for the decoder's update, `disc_step` for the discriminator's, `state_dict` /
    `load_state_dict` for checkpoints. Gradients are averaged over ranks by the caller (DDP-free,
    because the decoder's loss passes through a frozen discriminator)."""

    def __init__(self, config: Config, world: World, device: torch.device):
        self.cfg, self.ae_cfg, self.world = config.decoder, config.ae, world
        n_classes = len(CLASS_NAMES) if self.cfg.decoder_disc_classes else 0
        self.disc = PatchDiscriminator(self.cfg.decoder_disc_width, n_classes).to(device)
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.decoder_lr, betas=(0.5, 0.9))
        self.rcnn = RandomCNN().to(device)
        self.weights = torch.zeros(2, device=device)          # (w_p, w_f); zeros until the first batch
        self.scale = torch.zeros((), device=device)           # the adaptive weight

    def decoder_loss(self, last_layer: torch.Tensor, x_hat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     pair: dict, fake_aug: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The decoder's loss on x_hat for targets x of classes y. `pair` augments x and x_hat alike
        (feature matching), `fake_aug` x_hat for the hinge term; `last_layer` is where the adaptive
        weight compares gradients. Returns (loss, its parts detached)."""
        self.disc.requires_grad_(False)
        pixel, _ = reconstruction_loss(x_hat, x, self.ae_cfg.l1_weight)
        perceptual = self.rcnn.distance(x_hat, x)
        real_f = disc_features(self.disc, augment(x, pair))
        fake_f = disc_features(self.disc, augment(x_hat, pair))
        matching = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_f, real_f)) / len(real_f)
        if not bool(self.weights.any()):                       # first batch: each term at the pixel loss's size
            means = self.world.mean({"pixel": pixel, "perceptual": perceptual, "matching": matching})
            self.weights.copy_(torch.stack([means["pixel"] / means["perceptual"].clamp_min(1e-8),
                                            means["pixel"] / means["matching"].clamp_min(1e-8)]).detach())
        rec = pixel + self.weights[0] * perceptual + self.weights[1] * matching
        adv = generator_hinge_loss(self.disc(augment(x_hat, fake_aug), y))
        if step % ADAPTIVE_EVERY == 0:                         # VQGAN: adv gradient = weight x rec gradient
            g_rec, = torch.autograd.grad(rec, last_layer, retain_graph=True)
            g_adv, = torch.autograd.grad(adv, last_layer, retain_graph=True)
            g = self.world.mean({"rec": g_rec, "adv": g_adv})   # the global batch's gradients
            weight = self.cfg.decoder_adv_weight * g["rec"].norm() / (g["adv"].norm() + 1e-4)
            self.scale.copy_(weight.clamp(0, 1e4).detach())
        loss = rec + self.scale * adv
        parts = {"loss": loss, "pixel": pixel, "perceptual": perceptual, "matching": matching, "adv": adv,
                 "adv_scale": self.scale}
        return loss, {k: v.detach().clone() for k, v in parts.items()}

    def disc_step(self, x: torch.Tensor, x_hat: torch.Tensor, y: torch.Tensor, real_aug: dict, fake_aug: dict,
                  step: int, autocast) -> torch.Tensor:
        """One discriminator update: hinge loss on augmented real vs augmented (detached) fake images,
        plus the lazy R1 penalty on the augmented reals; returns its loss."""
        self.disc.requires_grad_(True)
        real = x.detach().requires_grad_(step % R1_EVERY == 0)
        with autocast:
            real_logits = self.disc(augment(real, real_aug), y)
            loss = F.relu(1 - real_logits).mean() + F.relu(1 + self.disc(augment(x_hat.detach(), fake_aug), y)).mean()
        if step % R1_EVERY == 0:
            grad, = torch.autograd.grad(real_logits.float().mean((1, 2, 3)).sum(), real, create_graph=True)
            loss = loss + R1_EVERY * self.cfg.decoder_r1_gamma / 2 * grad.pow(2).sum((1, 2, 3)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.world.average_gradients(self.disc)
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {"discriminator": self.disc.state_dict(), "optimizer_d": self.optimizer.state_dict(),
                "weights": self.weights.clone(), "adv_scale": self.scale.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer_d"])
        self.weights.copy_(state["weights"])
        self.scale.copy_(state["adv_scale"])
