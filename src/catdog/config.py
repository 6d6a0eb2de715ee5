"""Configuration: one frozen dataclass per part, plus named presets.

`Config` (autoencoder, diffusion, run) is what a checkpoint must match: it is saved in every weight
file and every training field is one command-line flag (`latent_dim` -> `--latent-dim`), so field
names are unique across the parts and carry their units (`ae_train_steps`, `ema_halflife_steps`).
`SampleConfig` (sampler, steps, guidance) is chosen per command and never stored in weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from catdog.errors import UserError


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_dim: int = 128                    # flat latent vector, the spec's 128
    # encoder widths at 32, 16, 8, 4 px (the decoder mirrors them); narrow at high resolution,
    # because on a CPU cheap steps beat wide networks at equal time
    ae_channels: tuple[int, ...] = (16, 32, 64, 128)
    ae_blocks: int = 1                       # CAB blocks per resolution (encoder and decoder)
    ae_train_steps: int = 6600
    ae_batch_size: int = 64
    ae_lr: float = 2e-3
    ae_warmup_steps: int = 100
    ae_weight_decay: float = 1e-4
    l1_weight: float = 0.5                   # L1 next to MSE: sharper edges than MSE alone
    # the class terms shape the latent but compete with reconstruction, so they are kept small
    cls_weight: float = 0.03                 # latent classifier CE
    center_weight: float = 0.01              # Center Loss (Wen et al. 2016) on the latent
    latent_noise_std: float = 0.05           # noise on the (unit-RMS) latent while training: smooth decoder
    hflip: bool = True                       # horizontal-flip augmentation
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
    # the prior memorises 10,000 images' latents within a few thousand steps; it also trains on the latents
    # of the training images (and mirrors) shifted by up to this many pixels: more distinct latents
    diffusion_shift_px: int = 0


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder stage: the autoencoder's decoder fine-tuned adversarially, encoder frozen (decoder_gan.py)."""
    decoder_train_steps: int = 0             # 0: no decoder stage (the autoencoder's decoder as trained)
    decoder_batch_size: int = 64
    decoder_lr: float = 2e-4                 # Adam (0.5, 0.9): the decoder's peak, the discriminator's constant
    decoder_warmup_steps: int = 200
    decoder_adv_weight: float = 0.8          # the hinge term's gradient relative to the rest (VQGAN)
    decoder_r1_gamma: float = 0.1            # R1 penalty on real images
    decoder_disc_width: int = 64             # PatchGAN discriminator base width
    decoder_disc_classes: bool = False       # projection discriminator: D also judges the image's class


@dataclass(frozen=True)
class RefinerConfig:
    refiner_train_steps: int = 0             # 0: no refiner stage (samples are the decoder's output)
    refiner_widths: tuple[int, ...] = (48, 96, 96)  # conv U-Net widths at 32, 16, 8 px
    refiner_emb_dim: int = 128               # time + class embedding width
    refiner_batch_size: int = 64
    refiner_crop_px: int = 16                # trains on random crops of this size (fully convolutional)
    refiner_lr: float = 1e-3
    refiner_warmup_steps: int = 200
    refiner_ema_halflife_steps: int = 500


@dataclass(frozen=True)
class RunConfig:
    """How a stage trains; the fields in SHAPING_RUN_FIELDS change its result, the others only its logging
    or speed, so only those must match when a stage resumes or is reused."""
    seed: int = 0
    grad_clip: float = 1.0
    log_every_steps: int = 100
    checkpoint_every_steps: int = 500
    bf16: bool = True                        # bf16 autocast on CUDA and on CPUs with native bf16
    compile: bool = False                    # torch.compile the training step with CUDA graphs (CUDA only)


SHAPING_RUN_FIELDS = ("seed", "grad_clip", "bf16")


@dataclass(frozen=True)
class Config:
    ae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    run: RunConfig = field(default_factory=RunConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class SampleConfig:
    """How to draw samples from a trained run: not part of any checkpoint."""
    sampler: str = "ddim"                    # ddim: deterministic, `steps` steps; ddpm: all n_steps, ancestral
    steps: int = 50                          # DDIM steps (ddpm always runs the model's n_steps)
    guidance: float = 9.0                    # classifier-free guidance scale w; 1 = plain conditional
    seed: int = 0
    refiner: bool = True                     # use the run's refiner if it has one
    refiner_steps: int = 10                  # DDIM steps of the refiner
    eta: float = 0.0                         # ddim: 0 deterministic, 1 ancestral (fresh noise every step)
    guidance_interval: tuple[float, float] | None = None   # guide only where lo < sigma_t <= hi


PRESETS: dict[str, Config] = {
    # seconds: for tests and smoke runs
    "tiny": Config(
        AutoencoderConfig(latent_dim=16, ae_channels=(8, 16, 16, 16), ae_train_steps=30,
                          ae_batch_size=16, ae_warmup_steps=5),
        DiffusionConfig(n_steps=50, unet_widths=(32, 16), unet_blocks=1, emb_dim=16,
                        diffusion_train_steps=40, diffusion_batch_size=32,
                        diffusion_warmup_steps=5, ema_halflife_steps=5),
        RunConfig(log_every_steps=10, checkpoint_every_steps=10, bf16=False),
        RefinerConfig(refiner_train_steps=20, refiner_widths=(8, 16, 16), refiner_emb_dim=16,
                      refiner_batch_size=8, refiner_warmup_steps=5, refiner_ema_halflife_steps=5),
        DecoderConfig(decoder_train_steps=10, decoder_batch_size=8, decoder_warmup_steps=2,
                      decoder_disc_width=8),
    ),
    # the default without a GPU: FID 92.3 @2k (111.7 unrefined), 15.0 min on 2 cores, of which the
    # refiner's 2,400 steps take 203 s
    "cpu": Config(refiner=RefinerConfig(refiner_train_steps=2400)),
    # the cpu networks trained ~8x longer, for a pretrained model without a GPU: FID 95.8 @2k, 77 min on 2 cores
    "full": Config(
        AutoencoderConfig(ae_train_steps=26000, ae_batch_size=128, ae_warmup_steps=500),
        DiffusionConfig(diffusion_train_steps=10000, diffusion_batch_size=512, diffusion_warmup_steps=500,
                        ema_halflife_steps=600),
        RunConfig(checkpoint_every_steps=2000, log_every_steps=500),
        RefinerConfig(refiner_train_steps=20000, refiner_widths=(64, 128, 128), refiner_warmup_steps=500,
                      refiner_ema_halflife_steps=1000),
    ),
    # the default with CUDA, one H100 in ~6 min. Both weight files fit ~15 MB in fp16. Steps of such
    # small networks cost kernel launches, not arithmetic, so the batches are large and CUDA graphs
    # (compile) cut the launches; the adversarial term sharpens the decoder from step 6,000
    "gpu": Config(
        AutoencoderConfig(ae_channels=(64, 128, 128, 128), ae_blocks=1, ae_train_steps=24000,
                          ae_batch_size=256, ae_lr=1e-3, ae_warmup_steps=500, adv_weight=0.8,
                          adv_start_step=6000, adv_scale_every_steps=25, disc_width=64,
                          cls_weight=0.1, center_weight=0.05),
        DiffusionConfig(unet_widths=(320, 160), unet_blocks=2, emb_dim=128,
                        diffusion_train_steps=20000, diffusion_batch_size=1024, diffusion_lr=1e-3,
                        diffusion_warmup_steps=500, ema_halflife_steps=1000),
        RunConfig(checkpoint_every_steps=4000, log_every_steps=1000, compile=True),
        RefinerConfig(refiner_train_steps=20000, refiner_widths=(64, 128, 128), refiner_batch_size=256,
                      refiner_crop_px=32, refiner_warmup_steps=500, refiner_ema_halflife_steps=1000),
    ),
}

_PART_CLASSES = {"ae": AutoencoderConfig, "diffusion": DiffusionConfig, "run": RunConfig,
                 "refiner": RefinerConfig, "decoder": DecoderConfig}

# Fields that weight files written by earlier versions carry. Sampling settings moved to SampleConfig;
# the options that lost their ablations (docs/experiments.md) are accepted only at their "off" value,
# each with the last commit that had it.
_RETIRED_ANY = {"run": ("sample_steps", "guidance", "figure_samples_per_class", "n_eval_latents",
                        "compile_mode")}
_RETIRED_OFF = {"ae": {"ssim_weight": (0.0, "9fb6fcb"), "ae_translate_px": (0, "9fb6fcb")},
                "diffusion": {"unet_dropout": (0.0, "fc0d0a7"), "loss_weighting": ("min_snr", "d05954f"),
                              "self_condition": (False, "15a938b")}}


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (JSON-safe; tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> Config:
    """Inverse of config_to_dict; unknown keys are an error, missing keys take defaults."""
    if not isinstance(d, dict):
        raise UserError(f"config must be a JSON object, got {type(d).__name__}")
    unknown_sections = set(d) - set(_PART_CLASSES)
    if unknown_sections:
        raise UserError(f"unknown config section(s) {sorted(unknown_sections)}")
    parts = {}
    for section, cls in _PART_CLASSES.items():
        given = d.get(section) or {}
        if not isinstance(given, dict):
            raise UserError(f"config section '{section}' must be a JSON object")
        given = dict(given)
        for name in _RETIRED_ANY.get(section, ()):
            given.pop(name, None)
        for name, (off, commit) in _RETIRED_OFF.get(section, {}).items():
            if name in given and given.pop(name) != off:
                raise UserError(f"this model was trained with {name}, an option removed after commit "
                                f"{commit}; use that commit to load it")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(given) - known
        if unknown:
            raise UserError(f"unknown config field(s) {sorted(unknown)} in section '{section}'")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, value in given.items():
            given[name] = _typed(section, name, types[name], value)
        parts[section] = cls(**given)
    config = Config(**parts)
    validate(config)
    return config


def _typed(section: str, name: str, kind: str, value):
    """A stored field value of the declared type (a list becomes a tuple), else a UserError."""
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool),
          "str": isinstance(value, str)}.get(kind)
    if ok is None:                                                  # tuple[int, ...]
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise UserError(f"config field {section}.{name} must be {kind}, got {value!r:.60}")
    return float(value) if kind == "float" else value


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
    config = Config(**{s: dataclasses.replace(getattr(config, s), **c) for s, c in sections.items()})
    validate(config)
    return config


def norm_groups(channels: int) -> int:
    """GroupNorm groups for a layer of `channels`: up to 8, each of at least 4 channels."""
    return min(8, channels // 4) or 1


def validate(config: Config) -> None:
    """Reject values no run could use, with one clear message."""
    ae, dif, ref, run, dec = config.ae, config.diffusion, config.refiner, config.run, config.decoder
    positive = {"latent_dim": ae.latent_dim, "ae_blocks": ae.ae_blocks,
                "ae_train_steps": ae.ae_train_steps, "ae_batch_size": ae.ae_batch_size,
                "adv_scale_every_steps": ae.adv_scale_every_steps,
                "n_steps": dif.n_steps, "unet_blocks": dif.unet_blocks, "emb_dim": dif.emb_dim,
                "diffusion_train_steps": dif.diffusion_train_steps,
                "diffusion_batch_size": dif.diffusion_batch_size,
                "ema_halflife_steps": dif.ema_halflife_steps,
                "refiner_emb_dim": ref.refiner_emb_dim, "refiner_batch_size": ref.refiner_batch_size,
                "refiner_ema_halflife_steps": ref.refiner_ema_halflife_steps,
                "decoder_batch_size": dec.decoder_batch_size,
                "log_every_steps": run.log_every_steps,
                "checkpoint_every_steps": run.checkpoint_every_steps}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    rates = {"ae_lr": ae.ae_lr, "diffusion_lr": dif.diffusion_lr, "refiner_lr": ref.refiner_lr,
             "decoder_lr": dec.decoder_lr, "grad_clip": run.grad_clip}
    for name, value in rates.items():
        if not 0 < value < 1e3:
            raise UserError(f"--{name.replace('_', '-')} must be in (0, 1000), got {value}")
    non_negative = {"ae_warmup_steps": ae.ae_warmup_steps, "diffusion_warmup_steps": dif.diffusion_warmup_steps,
                    "refiner_warmup_steps": ref.refiner_warmup_steps, "ae_weight_decay": ae.ae_weight_decay,
                    "diffusion_weight_decay": dif.diffusion_weight_decay, "latent_noise_std": ae.latent_noise_std,
                    "min_snr_gamma": dif.min_snr_gamma, "adv_start_step": ae.adv_start_step, "seed": run.seed,
                    "decoder_train_steps": dec.decoder_train_steps, "decoder_warmup_steps": dec.decoder_warmup_steps,
                    "decoder_adv_weight": dec.decoder_adv_weight, "decoder_r1_gamma": dec.decoder_r1_gamma}
    for name, value in non_negative.items():
        if value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    # sizes no 2-core laptop or one GPU could allocate are refused now, not minutes into training
    sizes = {"latent_dim": (ae.latent_dim, 4096), "ae_batch_size": (ae.ae_batch_size, 65536),
             "diffusion_batch_size": (dif.diffusion_batch_size, 1 << 20),
             "refiner_batch_size": (ref.refiner_batch_size, 65536),
             "decoder_batch_size": (dec.decoder_batch_size, 65536), "n_steps": (dif.n_steps, 100_000),
             "emb_dim": (dif.emb_dim, 8192), "refiner_emb_dim": (ref.refiner_emb_dim, 8192),
             "ae_blocks": (ae.ae_blocks, 64), "unet_blocks": (dif.unet_blocks, 64),
             "ae_channels": (max(ae.ae_channels), 4096), "unet_widths": (max(dif.unet_widths or (1,)), 65536),
             "refiner_widths": (max(ref.refiner_widths or (4,)), 4096), "disc_width": (ae.disc_width, 4096),
             "decoder_disc_width": (dec.decoder_disc_width, 4096)}
    for name, (value, limit) in sizes.items():
        if value > limit:
            raise UserError(f"--{name.replace('_', '-')} {value} is too large (at most {limit:,})")
    if len(ae.ae_channels) != 4 or min(ae.ae_channels) <= 0:
        raise UserError("--ae-channels needs 4 positive widths (for 32, 16, 8 and 4 px)")
    if not dif.unet_widths or min(dif.unet_widths) <= 0:
        raise UserError("--unet-widths needs at least one positive width")
    if min(ae.l1_weight, ae.cls_weight, ae.center_weight) < 0:
        raise UserError("--l1-weight, --cls-weight and --center-weight must be >= 0")
    if ae.adv_weight < 0 or ae.disc_width <= 0 or ae.disc_width % 4:
        raise UserError("--adv-weight must be >= 0 and --disc-width a positive multiple of 4")
    if dec.decoder_disc_width <= 0 or dec.decoder_disc_width % 4:
        raise UserError(f"--decoder-disc-width must be a positive multiple of 4, got {dec.decoder_disc_width}")
    if ref.refiner_train_steps < 0:
        raise UserError(f"--refiner-train-steps must be >= 0, got {ref.refiner_train_steps}")
    if not ref.refiner_widths or min(ref.refiner_widths) < 4 or len(ref.refiner_widths) > 3:
        raise UserError("--refiner-widths needs 1 to 3 widths of at least 4 (for 32, 16, 8 px)")
    for name, widths in (("ae_channels", ae.ae_channels), ("refiner_widths", ref.refiner_widths)):
        for width in widths:
            if width % norm_groups(width):
                raise UserError(f"--{name.replace('_', '-')}: {width} channels do not split into "
                                f"{norm_groups(width)} GroupNorm groups; use a multiple of {norm_groups(width)}")
    if ref.refiner_crop_px not in (8, 16, 24, 32):
        raise UserError(f"--refiner-crop-px must be 8, 16, 24 or 32, got {ref.refiner_crop_px}")
    if not 0 <= dif.diffusion_shift_px <= 4:
        raise UserError(f"--diffusion-shift-px must be in 0..4, got {dif.diffusion_shift_px}")
    if not 0.0 <= dif.label_dropout < 1.0:
        raise UserError(f"--label-dropout must be in [0, 1), got {dif.label_dropout}")


def validate_sampling(sample: SampleConfig, n_steps: int) -> None:
    """Reject sampler settings this model cannot run."""
    if sample.sampler not in SAMPLERS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sample.sampler!r}")
    if not 1 <= sample.steps <= n_steps:
        raise UserError(f"--steps must be in 1..{n_steps} (the model's n_steps), got {sample.steps}")
    if not 0.0 <= sample.eta <= 1.0:
        raise UserError(f"--eta must be in [0, 1], got {sample.eta}")
    if sample.sampler == "ddpm" and sample.eta != 0.0:
        raise UserError("--eta belongs to --sampler ddim; ddpm is always ancestral")
    lo, hi = sample.guidance_interval or (0.0, math.inf)
    if not 0.0 <= lo < hi:
        raise UserError(f"--guidance-interval LO,HI needs 0 <= LO < HI, got {lo:g},{hi:g}")
    if not 1 <= sample.refiner_steps <= 1000:
        raise UserError(f"--refiner-steps must be in 1..1000, got {sample.refiner_steps}")
