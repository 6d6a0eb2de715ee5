"""Samplers: plain functions of a `denoise(z_t, t) -> denoised` callable, a schedule and a seed.

Guidance is a wrapper around the network, not a sampler flag (as in EDM2 / k-diffusion):
`guided_denoiser` returns denoise(z_t, t) = uncond + w * (cond - uncond), applied to the denoised
prediction (equivalent to guiding the noise prediction, since both are affine in it at fixed z_t).
- `ddpm_sample`: the ancestral chain over all n_steps (DDPM Algorithm 2, posterior of eq. 6-7).
- `ddim_sample`: deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0) on `steps` evenly spaced t.
The caller chooses one explicitly (`SampleConfig.sampler`).
Both return the final z and, on request, the trajectory of z_t after every step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from catdog.data import NULL_CLASS, to_uint8
from catdog.diffusion import ConditionalDenoiseDiffusion
from catdog.errors import UserError
from catdog.progress import progress as progress_of

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_denoiser(diffusion: ConditionalDenoiseDiffusion, y: torch.Tensor, guidance: float) -> Denoiser:
    """Classifier-free guidance: denoised = uncond + w (cond - uncond); w = 1 is the plain conditional."""

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            return diffusion.denoise(z_t, t, y)
        both = diffusion.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]),
                                 torch.cat([y, torch.full_like(y, NULL_CLASS)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return denoise


def class_mix_denoiser(diffusion: ConditionalDenoiseDiffusion, dog_share: float, guidance: float) -> Denoiser:
    """Guidance towards a blend of the classes: cond = (1 - a) cond(cat) + a cond(dog), a = dog_share;
    a = 0 / 1 is `guided_denoiser` for cat / dog. Sweeping a at a fixed seed shows what the model
    changes to turn a cat into a dog."""

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(NULL_CLASS + 1, device=z_t.device).repeat_interleave(len(z_t))  # cat, dog, null
        cat, dog, uncond = diffusion.denoise(z_t.repeat(3, 1), t.repeat(3), classes).chunk(3)
        return uncond + guidance * ((1 - dog_share) * cat + dog_share * dog - uncond)

    return denoise


def _start(shape, alpha_bar, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(alpha_bar.device)


@torch.no_grad()
def ddpm_sample(denoise: Denoiser, alpha_bar: torch.Tensor, shape: tuple[int, int],
                generator: torch.Generator, return_trajectory: bool = False):
    """Ancestral DDPM sampling from pure noise over every step t = T-1..0. Returns z (B, D)[, traj]."""
    z = _start(shape, alpha_bar, generator)
    trajectory = [z]
    n_steps = len(alpha_bar)
    for t in reversed(range(n_steps)):
        ab_t = alpha_bar[t]
        ab_prev = alpha_bar[t - 1] if t > 0 else torch.ones_like(ab_t)
        beta_t = 1 - ab_t / ab_prev
        denoised = denoise(z, torch.full((shape[0],), t, device=z.device, dtype=torch.long))
        # posterior q(z_{t-1} | z_t, z_0 = denoised): DDPM eq. 7
        mean = ((ab_prev.sqrt() * beta_t / (1 - ab_t)) * denoised
                + ((1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab_t)) * z)
        if t > 0:
            var = beta_t * (1 - ab_prev) / (1 - ab_t)
            z = mean + var.sqrt() * torch.randn(shape, generator=generator).to(z.device)
        else:
            z = mean
        trajectory.append(z)
    return (z, torch.stack(trajectory)) if return_trajectory else z


def ddim_timesteps(n_steps: int, steps: int) -> list[int]:
    """`steps` distinct t from n_steps-1 down to 0, evenly spaced."""
    if not 1 <= steps <= n_steps:
        raise ValueError(f"steps must be in 1..{n_steps}, got {steps}")
    ts = torch.linspace(n_steps - 1, 0, steps).round().long().tolist()
    return ts


@torch.no_grad()
def ddim_sample(denoise: Denoiser, alpha_bar: torch.Tensor, shape: tuple[int, int],
                generator: torch.Generator, steps: int = 50, return_trajectory: bool = False):
    """Deterministic DDIM (eta = 0) from pure noise in `steps` steps. Returns z (B, D)[, traj]."""
    z = _start(shape, alpha_bar, generator)
    trajectory = [z]
    ts = ddim_timesteps(len(alpha_bar), steps)
    for i, t in enumerate(ts):
        ab_t = alpha_bar[t]
        ab_next = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab_t)  # last: clean
        denoised = denoise(z, torch.full((shape[0],), t, device=z.device, dtype=torch.long))
        eps = (z - ab_t.sqrt() * denoised) / (1 - ab_t).sqrt()
        z = ab_next.sqrt() * denoised + (1 - ab_next).sqrt() * eps     # DDIM eq. 12, eta = 0
        trajectory.append(z)
    return (z, torch.stack(trajectory)) if return_trajectory else z


def sample_latents(diffusion: ConditionalDenoiseDiffusion, y: torch.Tensor, seed: int, steps: int,
                   guidance: float, return_trajectory: bool = False, sampler: str = "ddim"):
    """Standardised latents z (B, D) for classes y (B,): DDIM in `steps` steps, or the full DDPM chain."""
    generator = torch.Generator().manual_seed(seed)
    denoise = guided_denoiser(diffusion, y, guidance)
    shape = (len(y), diffusion.model.output.out_features)
    if sampler == "ddpm":
        return ddpm_sample(denoise, diffusion.alpha_bar, shape, generator, return_trajectory)
    if sampler != "ddim":
        raise ValueError(f"unknown sampler {sampler!r}")
    return ddim_sample(denoise, diffusion.alpha_bar, shape, generator, steps, return_trajectory)


REFINER_SEED_OFFSET = 7919               # the refiner's noise stream, apart from the latent sampler's


def generate_images(autoencoder, diffusion: ConditionalDenoiseDiffusion, labels, seed: int = 0, steps: int = 50,
                    guidance: float = 6.0, batch_size: int = 1000, progress: bool = False,
                    return_latents: bool = False, sampler: str = "ddim", refiner=None, refiner_steps: int = 10):
    """uint8 images (N, 32, 32, 3) for class labels (N,) [and their raw latents (N, D)]: latents from the
    diffusion model, decoded, then (if a refiner is given) refined in `refiner_steps` DDIM steps.

    Batch i of `batch_size` is seeded with seed + i, so a run is reproducible.
    """
    device = diffusion.alpha_bar.device
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    images, latents = [], []
    starts = range(0, len(labels), batch_size)
    for i, start in enumerate(progress_of(starts, "sampling", enabled=progress)):
        y = labels[start:start + batch_size].to(device)
        z = sample_latents(diffusion, y, seed + i, steps, guidance, sampler=sampler)
        if not torch.isfinite(z).all():                          # would decode to black images
            raise UserError(f"sampling diverged to non-finite values (guidance {guidance:g}); "
                            "use a smaller guidance")
        x = autoencoder.decode_latents(z)
        if refiner is not None:
            x = refiner.refine(x, y, seed + i + REFINER_SEED_OFFSET, refiner_steps)
        images.append(to_uint8(x))
        latents.append(autoencoder.denormalize(z).cpu().numpy())
    images = np.concatenate(images)
    return (images, np.concatenate(latents)) if return_latents else images
