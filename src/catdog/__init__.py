"""catdog: class-conditional latent diffusion for CIFAR-10 cats and dogs.

The public names of the original design are importable from here. They load on first use, so that
`import catdog` (and the `catdog` command, before it knows what to do) does not wait for torch, and a
Ctrl-C at that moment is the command's clean interrupt rather than a traceback from an import.
"""

import importlib

_PUBLIC = {
    "catdog.autoencoder": ("CenterLoss", "ChannelAttentionLayer", "ConvAttentionBlock", "SimpleAutoencoder"),
    "catdog.config": ("PRESETS", "AutoencoderConfig", "Config", "DiffusionConfig", "RunConfig", "SampleConfig"),
    "catdog.data": ("CLASS_NAMES", "create_cat_dog_dataset"),
    "catdog.denoiser": ("ClassEmbedding", "ConditionalUNet", "TimeEmbedding"),
    "catdog.diffusion": ("ConditionalDenoiseDiffusion",),
    "catdog.errors": ("UserError",),
    "catdog.pipeline": ("run_all",),
    "catdog.run_dir": ("load_autoencoder", "load_diffusion", "load_run"),
    "catdog.sample": ("ddim_sample", "ddpm_sample", "generate_images", "guided_denoiser"),
    "catdog.viz": ("create_diffusion_animation", "generate_samples_grid", "visualize_denoising_steps",
                   "visualize_latent_space", "visualize_reconstructions"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}

__version__ = "0.1.0"
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'catdog' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
