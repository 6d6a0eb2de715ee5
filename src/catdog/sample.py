"""Samplers: plain functions of a `denoise(z_t, t) -> denoised` callable, a schedule and a seed.

Guidance is a wrapper around the network, not a sampler flag (as in EDM2 / k-diffusion):
`guided_denoiser` returns denoise(z_t, t) = uncond + w * (cond - uncond), applied to the denoised
prediction (equivalent to guiding the noise prediction, since both are affine in it at fixed z_t).
- `ddpm_sample`: the ancestral chain over all n_steps (DDPM Algorithm 2, posterior of eq. 6-7).
- `ddim_sample`: DDIM (Song et al. 2021, eq. 12) on `steps` evenly spaced t: deterministic with eta = 0,
  ancestral with eta = 1 (at every t it is the DDPM chain), in between a mix of the two.
The caller chooses one explicitly (`SampleConfig.sampler`).
Both return the final z and, on request, the trajectory of z_t after every step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from catdog.config import SampleConfig
from catdog.data import NULL_CLASS, to_uint8
from catdog.diffusion import ConditionalDenoiseDiffusion
from catdog.errors import UserError
from catdog.progress import progress as progress_of

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noise_level(alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar): the noise-to-signal ratio of z_t (EDM's sigma)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def guided_denoiser(diffusion: ConditionalDenoiseDiffusion, y: torch.Tensor, guidance: float,
                    interval: tuple[float, float] | None = None) -> Denoiser:
    """Classifier-free guidance: denoised = uncond + w (cond - uncond); w = 1 is the plain conditional.
    With `interval` (lo, hi), guidance acts only where lo < sigma_t <= hi and the conditional model
    alone elsewhere (Kynkaanniemi et al. 2024: guidance at high noise costs diversity, at low noise
    it does little)."""

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            return diffusion.denoise(z_t, t, y)
        both = diffusion.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]),
                                 torch.cat([y, torch.full_like(y, NULL_CLASS)]))
        cond, uncond = both.chunk(2)
        w = torch.full_like(t, guidance, dtype=cond.dtype)
        if interval is not None:
            sigma = noise_level(diffusion.alpha_bar[t])
            w = torch.where((sigma > interval[0]) & (sigma <= interval[1]), w, torch.ones_like(w))
        return uncond + w[:, None] * (cond - uncond)

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
                generator: torch.Generator, steps: int = 50, return_trajectory: bool = False, eta: float = 0.0):
    """DDIM from pure noise in `steps` steps; eta = 0 deterministic, eta = 1 ancestral. Returns z (B, D)[, traj]."""
    z = _start(shape, alpha_bar, generator)
    return ddim_steps(denoise, alpha_bar, z, ddim_timesteps(len(alpha_bar), steps), generator, eta, return_trajectory)


@torch.no_grad()
def ddim_steps(denoise: Denoiser, alpha_bar: torch.Tensor, z: torch.Tensor, ts: list[int],
               generator: torch.Generator, eta: float = 0.0, return_trajectory: bool = False):
    """DDIM from z at t = ts[0] through each later t of `ts` to clean: one denoiser call per entry of ts."""
    trajectory = [z]
    for i, t in enumerate(ts):
        ab_t = alpha_bar[t]
        ab_next = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab_t)  # last: clean
        denoised = denoise(z, torch.full((len(z),), t, device=z.device, dtype=torch.long))
        eps = (z - ab_t.sqrt() * denoised) / (1 - ab_t).sqrt()
        # DDIM eq. 12 and 16: sigma^2 = eta^2 x the posterior variance of q(z_next | z_t, z_0)
        var = eta ** 2 * (1 - ab_next) / (1 - ab_t) * (1 - ab_t / ab_next)
        z = ab_next.sqrt() * denoised + (1 - ab_next - var).clamp_min(0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            z = z + var.sqrt() * torch.randn(z.shape, generator=generator).to(z.device)
        trajectory.append(z)
    return (z, torch.stack(trajectory)) if return_trajectory else z


def sample_latents(diffusion: ConditionalDenoiseDiffusion, y: torch.Tensor, seed: int, steps: int,
                   guidance: float, return_trajectory: bool = False, sampler: str = "ddim", eta: float = 0.0,
                   guidance_interval: tuple[float, float] | None = None):
    """Standardised latents z (B, D) for classes y (B,): DDIM in `steps` steps (stochastic with eta > 0),
    or the full DDPM chain."""
    generator = torch.Generator().manual_seed(seed)
    denoise = guided_denoiser(diffusion, y, guidance, guidance_interval)
    shape = (len(y), diffusion.model.output.out_features)
    if sampler == "ddpm":
        return ddpm_sample(denoise, diffusion.alpha_bar, shape, generator, return_trajectory)
    if sampler != "ddim":
        raise ValueError(f"unknown sampler {sampler!r}")
    return ddim_sample(denoise, diffusion.alpha_bar, shape, generator, steps, return_trajectory, eta)


REFINER_SEED_OFFSET = 7919               # the refiner's noise stream, apart from the latent sampler's


DEFAULT = SampleConfig()                         # the one place sampling defaults live


def generate_images(autoencoder, diffusion: ConditionalDenoiseDiffusion, labels, seed: int = DEFAULT.seed,
                    steps: int = DEFAULT.steps, guidance: float = DEFAULT.guidance, batch_size: int = 1000,
                    progress: bool = False, return_latents: bool = False, sampler: str = DEFAULT.sampler,
                    refiner=None, refiner_steps: int = DEFAULT.refiner_steps, eta: float = DEFAULT.eta,
                    guidance_interval: tuple[float, float] | None = DEFAULT.guidance_interval):
    """uint8 images (N, 32, 32, 3) for class labels (N,) [and their raw latents (N, D)]: latents from the
    diffusion model, decoded, then (if a refiner is given) refined in `refiner_steps` DDIM steps.

    Batch i of `batch_size` is seeded with seed + i, so a run is reproducible.
    """
    latent_of = lambda y, batch_seed: sample_latents(diffusion, y, batch_seed, steps, guidance, sampler=sampler,
                                                     eta=eta, guidance_interval=guidance_interval)
    return images_from_latents(autoencoder, diffusion, latent_of, labels, seed, batch_size, progress,
                               return_latents, refiner, refiner_steps, guidance)


def images_from_latents(autoencoder, diffusion, latent_of, labels, seed: int, batch_size: int = 1000,
                        progress: bool = False, return_latents: bool = False, refiner=None, refiner_steps: int = 10,
                        guidance: float = 1.0, inputs=None):
    """The batched path from sampled latents to uint8 images that `generate_images` and image-to-image
    share: batch i of labels (and of `inputs`, if given) gets `latent_of(y, seed + i[, inputs_i])`, which is
    decoded and refined with the refiner's noise stream seed + i + REFINER_SEED_OFFSET."""
    device = diffusion.alpha_bar.device
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    images, latents = [], []
    starts = range(0, len(labels), batch_size)
    for i, start in enumerate(progress_of(starts, "sampling", enabled=progress)):
        y = labels[start:start + batch_size].to(device)
        extra = () if inputs is None else (inputs[start:start + batch_size].to(device),)
        z = latent_of(y, seed + i, *extra)
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
