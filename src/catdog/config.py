"""Configuration: one frozen dataclass per part, plus named presets.

Every field is one command-line flag (`latent_dim` -> `--latent-dim`), so field names are unique
across the three dataclasses and carry their units (`ae_train_steps`, `ema_halflife_steps`).
A checkpoint stores `asdict(config)`, a plain dict, so loading it needs no pickled classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from catdog.errors import UserError


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_dim: int = 128                    # flat latent vector, the spec's 128
    # encoder widths at 32, 16, 8, 4 px (the decoder mirrors them); 3 widths start at 16 px, on 2x2
    # pixel blocks folded into channels (1.7x cheaper, mixed at equal time). Narrow at high resolution:
    # on 2 CPU cores 16,32,64,128 runs 1.9x the images per second of 32,64,128,128 and, at equal wall
    # time, reconstructs better (docs/experiments.md)
    ae_channels: tuple[int, ...] = (16, 32, 64, 128)
    ae_blocks: int = 1                       # CAB blocks per resolution (encoder and decoder)
    ae_train_steps: int = 6600
    ae_batch_size: int = 64
    ae_lr: float = 2e-3
    ae_warmup_steps: int = 100
    ae_weight_decay: float = 1e-4
    l1_weight: float = 0.5                   # L1 next to MSE: sharper edges than MSE alone
    # x (1 - SSIM), Wang et al. 2004: penalises lost local contrast (blur). 0.1 buys recon FID 93.1 ->
    # 89.0 but costs class fidelity, probe and ~8% per step; stacked with 3 widths still a trade
    # (docs/experiments.md), so off
    ssim_weight: float = 0.0
    # the class terms shape the latent but compete with reconstruction: 0.03 / 0.01 instead of 0.1 /
    # 0.05 cost 2 points of linear probe and buy 0.5 dB and 3.5 recon-FID points (docs/experiments.md)
    cls_weight: float = 0.03                 # latent classifier CE
    center_weight: float = 0.01              # Center Loss (Wen et al. 2016) on the latent
    latent_noise_std: float = 0.05           # noise on the (unit-RMS) latent while training: smooth decoder
    hflip: bool = True                       # horizontal-flip augmentation
    ae_translate_px: int = 0                 # random shifts of up to this many pixels (reflected border)
    adv_weight: float = 0.0                  # PatchGAN hinge loss, x VQGAN's adaptive weight (0 = off)
    adv_start_step: int = 0                  # switch the adversarial term on after this step
    adv_scale_every_steps: int = 10          # recompute the adaptive weight every this many steps
    disc_width: int = 32                     # discriminator base width


@dataclass(frozen=True)
class DiffusionConfig:
    n_steps: int = 1000                      # discrete diffusion steps t = 0..n_steps-1
    unet_widths: tuple[int, ...] = (384, 192)  # MLP widths per U level, outermost first
    unet_blocks: int = 2                     # residual blocks per level (each side of the U)
    emb_dim: int = 128                       # time + class embedding width
    label_dropout: float = 0.1               # P(y -> null class): classifier-free guidance
    diffusion_train_steps: int = 4000
    diffusion_batch_size: int = 256
    diffusion_lr: float = 1e-3
    diffusion_warmup_steps: int = 200
    diffusion_weight_decay: float = 0.0
    ema_halflife_steps: int = 300
    min_snr_gamma: float = 5.0               # Min-SNR loss weighting (Hang et al. 2023); 0 = off


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    grad_clip: float = 1.0
    log_every_steps: int = 100
    checkpoint_every_steps: int = 500
    bf16: bool = True                        # bf16 autocast on CUDA and on CPUs with native bf16
    compile: bool = False                    # torch.compile the training step, CUDA only
    compile_mode: str = "reduce-overhead"   # torch.compile mode: CUDA graphs cut the launches
    sample_steps: int = 50                   # DDIM steps for figures and `sample`
    guidance: float = 6.0                    # classifier-free guidance scale (figures, sample, evaluate)
    figure_samples_per_class: int = 16
    n_eval_latents: int = 2000               # test latents used for t-SNE / probes


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Config:
    ae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    run: RunConfig = field(default_factory=RunConfig)


PRESETS: dict[str, Config] = {
    # seconds: for tests and smoke runs
    "tiny": Config(
        AutoencoderConfig(latent_dim=16, ae_channels=(8, 16, 16, 16), ae_train_steps=30,
                          ae_batch_size=16, ae_warmup_steps=5),
        DiffusionConfig(n_steps=50, unet_widths=(32, 16), unet_blocks=1, emb_dim=16,
                        diffusion_train_steps=40, diffusion_batch_size=32,
                        diffusion_warmup_steps=5, ema_halflife_steps=5),
        RunConfig(log_every_steps=10, checkpoint_every_steps=10, bf16=False, sample_steps=5,
                  figure_samples_per_class=4, n_eval_latents=64),
    ),
    # the default without a GPU: the whole `run` within 15 minutes on 2 CPU cores
    "cpu": Config(),
    # the long CPU run (77 min on 2 cores), for a pretrained model without a GPU: the cpu preset's
    # networks (cheap steps beat wide ones on CPU) with 8x its autoencoder images (batch 128 runs
    # 12% more images/s than 64 there) and 5x its diffusion samples. Measured (docs/experiments.md):
    # FID 95.8 vs 111.7 at N = 2,000, recon FID 82.4 vs 93.1, but the autoencoder memorises its training
    # images (train/test PSNR 26.8 / 23.8 dB); random shifts (--ae-translate-px 2) stop that but lose
    # the sharpness (recon FID 89.8, FID 105.3), so they stay off
    "full": Config(
        AutoencoderConfig(ae_train_steps=26000, ae_batch_size=128, ae_warmup_steps=500),
        DiffusionConfig(diffusion_train_steps=10000, diffusion_batch_size=512, diffusion_warmup_steps=500,
                        ema_halflife_steps=600),
        RunConfig(checkpoint_every_steps=2000, log_every_steps=500),
    ),
    # the default with CUDA: one H100, the whole `run` within 10 minutes; sized so that both weight
    # files fit ~15 MB in fp16 (AE 3.9 M, denoiser 3.7 M parameters). On the H100 lent here a step
    # of these small networks costs the kernel launches, not the arithmetic (eager: ~35 AE steps/s
    # at batch 128, 256 or 512), so the batches are large and CUDA graphs (compile, reduce-overhead)
    # cut the launches: ~155 AE and ~145 diffusion steps/s measured in the training loop
    # (benchmarks/bench_compile.py, benchmarks/gpu_session.sh; numbers in docs/experiments.md). The
    # adversarial term (PatchGAN, adaptive weight x 0.8) sharpens the decoder from step 6,000.
    "gpu": Config(
        AutoencoderConfig(ae_channels=(64, 128, 128, 128), ae_blocks=1, ae_train_steps=24000,
                          ae_batch_size=256, ae_lr=1e-3, ae_warmup_steps=500, adv_weight=0.8,
                          adv_start_step=6000, adv_scale_every_steps=25, disc_width=64,
                          cls_weight=0.1, center_weight=0.05),   # as on the H100 (0.03 / 0.01 untried)
        DiffusionConfig(unet_widths=(320, 160), unet_blocks=2, emb_dim=128,
                        diffusion_train_steps=20000, diffusion_batch_size=1024, diffusion_lr=1e-3,
                        diffusion_warmup_steps=500, ema_halflife_steps=1000),
        RunConfig(checkpoint_every_steps=4000, log_every_steps=1000, compile=True),
    ),
}


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (JSON-safe; tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> Config:
    """Inverse of config_to_dict; unknown keys are an error, missing keys take defaults."""
    parts = {}
    for section, cls in _PART_CLASSES.items():
        given = dict(d.get(section, {}))
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(given) - set(known)
        if unknown:
            raise UserError(f"unknown config field(s) {sorted(unknown)} in section '{section}'")
        for name, value in given.items():
            if isinstance(value, list):
                given[name] = tuple(value)
        parts[section] = cls(**given)
    return Config(**parts)


_PART_CLASSES = {"ae": AutoencoderConfig, "diffusion": DiffusionConfig, "run": RunConfig}


def all_fields() -> list[tuple[str, str, dataclasses.Field]]:
    """(section, field name, field) for every overridable field."""
    return [(section, f.name, f) for section, cls in _PART_CLASSES.items()
            for f in dataclasses.fields(cls)]


def override(config: Config, changes: dict[str, object]) -> Config:
    """Return config with the named fields (flat names, unique across sections) replaced."""
    sections = {section: {} for section in _PART_CLASSES}
    owner = {name: section for section, name, _ in all_fields()}
    for name, value in changes.items():
        if name not in owner:
            raise UserError(f"unknown config field '{name}'")
        sections[owner[name]][name] = value
    new = {s: dataclasses.replace(getattr(config, s), **c) for s, c in sections.items()}
    config = Config(**new)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Reject values no run could use, with one clear message."""
    ae, dif, run = config.ae, config.diffusion, config.run
    positive = {"latent_dim": ae.latent_dim, "ae_blocks": ae.ae_blocks,
                "ae_train_steps": ae.ae_train_steps, "ae_batch_size": ae.ae_batch_size,
                "adv_scale_every_steps": ae.adv_scale_every_steps,
                "n_steps": dif.n_steps, "unet_blocks": dif.unet_blocks, "emb_dim": dif.emb_dim,
                "diffusion_train_steps": dif.diffusion_train_steps,
                "diffusion_batch_size": dif.diffusion_batch_size,
                "ema_halflife_steps": dif.ema_halflife_steps, "sample_steps": run.sample_steps,
                "log_every_steps": run.log_every_steps,
                "checkpoint_every_steps": run.checkpoint_every_steps,
                "figure_samples_per_class": run.figure_samples_per_class,
                "n_eval_latents": run.n_eval_latents}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if len(ae.ae_channels) not in (3, 4) or min(ae.ae_channels) <= 0:
        raise UserError("--ae-channels needs 4 positive widths (for 32, 16, 8 and 4 px) or 3 (16, 8, 4 px)")
    if not dif.unet_widths or min(dif.unet_widths) <= 0:
        raise UserError("--unet-widths needs at least one positive width")
    if not 0 <= ae.ae_translate_px <= 8:
        raise UserError(f"--ae-translate-px must be in 0..8, got {ae.ae_translate_px}")
    if min(ae.l1_weight, ae.ssim_weight, ae.cls_weight, ae.center_weight) < 0:
        raise UserError("--l1-weight, --ssim-weight, --cls-weight and --center-weight must be >= 0")
    if ae.adv_weight < 0 or ae.disc_width <= 0 or ae.disc_width % 4:
        raise UserError("--adv-weight must be >= 0 and --disc-width a positive multiple of 4")
    if run.compile_mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {run.compile_mode!r}")
    if not 0.0 <= dif.label_dropout < 1.0:
        raise UserError(f"--label-dropout must be in [0, 1), got {dif.label_dropout}")
    if run.sample_steps > dif.n_steps:
        raise UserError(f"--sample-steps ({run.sample_steps}) exceeds --n-steps ({dif.n_steps})")
