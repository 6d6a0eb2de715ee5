"""The generative decoding stage: a small pixel-space diffusion model that adds the detail a 128-d
latent cannot carry (after DiffuseVAE, Pandey et al. 2022).

The decoder returns x_hat = D(z), the average image compatible with z: a blur. The refiner samples the
residual r = x - x_hat given x_hat (concatenated as input channels) and the class, with the same
v-prediction diffusion as the latents (diffusion.py), and returns x_hat + r. The residual is divided by
its measured standard deviation (`residual_std`, stored with the weights) so that the diffusion sees
unit-scale data. `RefinerUNet` is a convolutional U-Net at 32/16/8 px whose residual blocks take the
time + class embedding as a GroupNorm scale and shift; being fully convolutional, it trains on random
crops and samples whole images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catdog.config import RefinerConfig, norm_groups
from catdog.denoiser import ClassEmbedding, TimeEmbedding
from catdog.diffusion import ConditionalDenoiseDiffusion
from catdog.sample import ddim_sample


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels)


class RefinerBlock(nn.Module):
    """h -> h' (out channels): two 3x3 convs, the second normalisation modulated by the embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.modulation = nn.Linear(emb_dim, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)                       # each block starts as its skip
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(emb)[:, :, None, None].chunk(2, dim=1)
        a = self.conv1(F.silu(self.norm1(h)))
        a = self.conv2(F.silu(self.norm2(a) * (1 + scale) + shift))
        return self.skip(h) + a


class RefinerUNet(nn.Module):
    """(r_t (B, 3, H, W), t (B,), y (B,), x_hat (B, 3, H, W)) -> v (B, 3, H, W); H, W multiples of 4."""

    def __init__(self, widths: tuple[int, ...] = (48, 96, 96), emb_dim: int = 128):
        super().__init__()
        self.time_embedding, self.class_embedding = TimeEmbedding(emb_dim), ClassEmbedding(emb_dim)
        self.stem = nn.Conv2d(6, widths[0], 3, padding=1)          # r_t and x_hat, side by side
        self.down = nn.ModuleList(RefinerBlock(widths[max(l - 1, 0)], w, emb_dim) for l, w in enumerate(widths))
        self.downsample = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.middle = RefinerBlock(widths[-1], widths[-1], emb_dim)
        self.up = nn.ModuleList(RefinerBlock(2 * w, widths[max(l - 1, 0)], emb_dim) for l, w in enumerate(widths))
        self.out_norm = group_norm(widths[0])
        self.output = nn.Conv2d(widths[0], 3, 3, padding=1)
        nn.init.zeros_(self.output.weight)                         # the untrained refiner adds nothing
        nn.init.zeros_(self.output.bias)

    def forward(self, r_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.time_embedding(t) + self.class_embedding(y))
        h = self.stem(torch.cat([r_t, x_hat], dim=1))
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                h = self.downsample[level - 1](h)                  # halve the resolution
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for level in reversed(range(len(self.up))):
            h = self.up[level](torch.cat([h, skips.pop()], dim=1), emb)
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return self.output(F.silu(self.out_norm(h)))


class Refiner(ConditionalDenoiseDiffusion):
    """The residual diffusion with its residual scale; `refine` turns decoder outputs into samples."""

    def __init__(self, cfg: RefinerConfig, n_steps: int = 1000):
        super().__init__(RefinerUNet(cfg.refiner_widths, cfg.refiner_emb_dim), n_steps, label_dropout=0.0,
                         min_snr_gamma=5.0)
        self.register_buffer("residual_std", torch.ones(()))

    @torch.no_grad()
    def set_residual_std(self, residuals: torch.Tensor) -> None:
        self.residual_std.copy_(residuals.float().std().clamp_min(1e-4))

    def loss_on(self, x: torch.Tensor, x_hat: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        """The v loss of the scaled residual (x - x_hat) / residual_std, conditioned on x_hat and y."""
        no_drop = torch.zeros_like(y, dtype=torch.bool)
        return self.loss((x - x_hat) / self.residual_std, y, t, noise, no_drop, x_hat)

    @torch.no_grad()
    def refine(self, x_hat: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 10,
               batch_size: int = 500) -> torch.Tensor:
        """Decoder outputs x_hat (N, 3, 32, 32) in [-1, 1], classes y (N,) -> refined x, clamped;
        DDIM in `steps` steps from noise seeded by `seed` (one generator for all batches)."""
        generator = torch.Generator().manual_seed(seed)

        def refine_batch(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            denoise = lambda r_t, t: self.denoise(r_t, t, yb, xb)
            r = ddim_sample(denoise, self.alpha_bar, tuple(xb.shape), generator, steps)
            return (xb + self.residual_std * r).clamp(-1, 1)

        return torch.cat([refine_batch(xb, yb) for xb, yb in zip(x_hat.split(batch_size), y.split(batch_size))])
