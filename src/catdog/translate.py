"""Image-to-image through the latent: turn a picture into the other class, and walk between two pictures
or two seeds.

`translate_latents` follows diffusers' img2img convention (SDEdit, Meng et al. 2022): the run's sampling
schedule (DDIM's `steps` evenly spaced t, or every t for ddpm) keeps its last int(len * strength) entries;
the picture's standardised latent z_0 is noised to the first of them with the noise `catdog sample` starts
from at that seed, and those steps run toward the target class with guidance. Strength 0 runs no step
(the reconstruction); strength 1 runs the whole schedule from sqrt(alpha_bar_T) z_0 + sqrt(1 - alpha_bar_T)
noise, which differs from the sampler's pure noise only by the signal alpha_bar_T leaves.

Interpolation is deterministic DDIM: between two seeds, the starting noises are interpolated spherically
(they are Gaussian, so their norm must stay typical); between two pictures, their latents are first
DDIM-inverted to noise with the conditional model of their own class (guidance 1, whose round trip
returns close to the picture), and every frame is generated with that model, the class prediction mixed
from the first picture's class to the second's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from catdog.config import SampleConfig
from catdog.data import to_uint8
from catdog.diffusion import ConditionalDenoiseDiffusion
from catdog.errors import UserError
from catdog.sample import (REFINER_SEED_OFFSET, class_mix_denoiser, ddim_steps, ddim_timesteps, guided_denoiser)


def schedule(n_steps: int, sample: SampleConfig) -> tuple[list[int], float]:
    """The t of each denoiser call of the run's sampler, noisiest first, and its eta (ddpm: every t, 1)."""
    if sample.sampler == "ddpm":
        return list(range(n_steps - 1, -1, -1)), 1.0
    return ddim_timesteps(n_steps, sample.steps), sample.eta


def check_strength(strength: float) -> float:
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise UserError(f"--strength must be a number in [0, 1], got {strength}")
    return float(strength)


def denoiser_calls(n_steps: int, sample: SampleConfig, strength: float) -> int:
    """How many steps (denoiser calls, two rows each under guidance) img2img runs: int(len * strength)."""
    return int(len(schedule(n_steps, sample)[0]) * check_strength(strength))


@torch.no_grad()
def translate_latents(diffusion: ConditionalDenoiseDiffusion, z0: torch.Tensor, y: torch.Tensor, strength: float,
                      sample: SampleConfig, seed: int) -> torch.Tensor:
    """Standardised latents z_0 (B, D) carried toward classes y (B,) at this strength (module docstring)."""
    ts, eta = schedule(diffusion.n_steps, sample)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device)  # the sampler's start
    tail = ts[len(ts) - denoiser_calls(diffusion.n_steps, sample, strength):]
    if not tail:
        return z0
    ab = diffusion.alpha_bar[tail[0]]
    z = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    denoise = guided_denoiser(diffusion, y, sample.guidance, sample.guidance_interval)
    return ddim_steps(denoise, diffusion.alpha_bar, z, tail, generator, eta)


def slerp(a: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (B, D) at s in [0, 1]; exactly a at 0 and b at 1."""
    if s <= 0:
        return a.clone()
    if s >= 1:
        return b.clone()
    cos = ((a * b).sum(1, keepdim=True) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True))).clamp(-1, 1)
    theta = torch.arccos(cos)
    small = theta.abs() < 1e-4                                     # (nearly) parallel: a straight line
    sin = torch.where(small, torch.ones_like(theta), theta.sin())
    mixed = (torch.sin((1 - s) * theta) * a + torch.sin(s * theta) * b) / sin
    return torch.where(small, (1 - s) * a + s * b, mixed)


@torch.no_grad()
def invert_latents(diffusion: ConditionalDenoiseDiffusion, z0: torch.Tensor, y: torch.Tensor, steps: int
                   ) -> torch.Tensor:
    """DDIM inversion (guidance 1, classes y): the noise at t = n_steps - 1 from which `steps` DDIM steps of
    the same model return (close) to z_0; each step reuses the prediction at the current t."""
    denoise = guided_denoiser(diffusion, y, 1.0)
    ts = ddim_timesteps(diffusion.n_steps, steps)[::-1]              # 0 ... n_steps - 1
    z = z0
    for t, t_next in zip(ts[:-1], ts[1:]):
        ab_t, ab_next = diffusion.alpha_bar[t], diffusion.alpha_bar[t_next]
        denoised = denoise(z, torch.full((len(z),), t, device=z.device, dtype=torch.long))
        eps = (z - ab_t.sqrt() * denoised) / (1 - ab_t).sqrt()
        z = ab_next.sqrt() * denoised + (1 - ab_next).sqrt() * eps
    return z


def interpolation_shares(frames: int) -> list[float]:
    if not 2 <= frames <= 64:
        raise UserError(f"--frames must be in 2..64, got {frames}")
    return np.linspace(0.0, 1.0, frames).tolist()


@torch.no_grad()
def interpolate_latents(diffusion: ConditionalDenoiseDiffusion, start: tuple[torch.Tensor, torch.Tensor],
                        classes: tuple[int, int], frames: int, sample: SampleConfig, guidance: float
                        ) -> tuple[torch.Tensor, list[float]]:
    """Latents (frames, D) generated by DDIM from the spherical interpolation of two starting noises (1, D),
    the class prediction mixed from classes[0] to classes[1] at `guidance`; and each frame's position."""
    shares = interpolation_shares(frames)
    ts = ddim_timesteps(diffusion.n_steps, sample.steps)
    z = []
    for s in shares:
        dog_share = classes[0] + (classes[1] - classes[0]) * s
        denoise = (guided_denoiser(diffusion, torch.tensor([classes[0] if s < 0.5 else classes[1]],
                                                           device=start[0].device), guidance)
                   if dog_share in (0.0, 1.0) else class_mix_denoiser(diffusion, dog_share, guidance))
        z.append(ddim_steps(denoise, diffusion.alpha_bar, slerp(*start, s), ts, torch.Generator()))
    return torch.cat(z), shares


def refine_frames(refiner, x: torch.Tensor, classes: tuple[int, int], seeds: tuple[int, int], shares: list[float],
                  steps: int) -> np.ndarray:
    """Each frame refined with the noise stream of its nearer end, so that the end frames are those ends'
    own refined outputs; uint8 (frames, 32, 32, 3)."""
    if refiner is None:
        return to_uint8(x)
    out = []
    for i, s in enumerate(shares):
        end = 0 if s < 0.5 else 1
        y = torch.tensor([classes[end]], device=x.device)
        out.append(refiner.refine(x[i:i + 1], y, seeds[end] + REFINER_SEED_OFFSET, steps))
    return to_uint8(torch.cat(out))
