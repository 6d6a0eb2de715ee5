"""catdog: class-conditional latent diffusion for CIFAR-10 cats and dogs.

The public names of the original design are importable from here.
"""

from catdog.autoencoder import CenterLoss, ChannelAttentionLayer, ConvAttentionBlock, SimpleAutoencoder
from catdog.config import PRESETS, AutoencoderConfig, Config, DiffusionConfig, RunConfig, SampleConfig
from catdog.data import CLASS_NAMES, create_cat_dog_dataset
from catdog.denoiser import ClassEmbedding, ConditionalUNet, TimeEmbedding
from catdog.diffusion import ConditionalDenoiseDiffusion
from catdog.errors import UserError
from catdog.pipeline import run_all
from catdog.run_dir import load_autoencoder, load_diffusion, load_run
from catdog.sample import ddim_sample, ddpm_sample, generate_images, guided_denoiser
from catdog.viz import (create_diffusion_animation, generate_samples_grid, visualize_denoising_steps,
                        visualize_latent_space, visualize_reconstructions)

__version__ = "0.1.0"
__all__ = [
    "CLASS_NAMES", "PRESETS", "AutoencoderConfig", "CenterLoss", "ChannelAttentionLayer", "ClassEmbedding",
    "Config", "ConditionalDenoiseDiffusion", "ConditionalUNet", "ConvAttentionBlock", "DiffusionConfig",
    "RunConfig", "SampleConfig", "SimpleAutoencoder", "TimeEmbedding", "UserError", "create_cat_dog_dataset",
    "create_diffusion_animation", "ddim_sample", "ddpm_sample", "generate_images", "generate_samples_grid",
    "guided_denoiser", "load_autoencoder", "load_diffusion", "load_run", "run_all", "visualize_denoising_steps",
    "visualize_latent_space", "visualize_reconstructions",
]
