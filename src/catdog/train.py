"""Training loops: `train_autoencoder`, `train_diffusion`, `train_decoder` and `train_refiner`, each a
plain linear loop (nanoGPT style).

Each step reads 1. batch, 2. loss and update, 3. EMA (diffusion, refiner) or the discriminator's
update (autoencoder with the adversarial term, decoder), 4. log / checkpoint. AdamW (Adam for the
decoder's GAN fine-tune) with warm-up then cosine decay, gradient clipping and bf16 autocast where it
pays; the scaffolding (resume, logging, checkpoints, the NaN
guard) is `TrainingLoop`. A rerun of the same command resumes to the same weights as an
uninterrupted run (bitwise on the CPU).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from catdog.adversarial import AdversarialTerm
from catdog.autoencoder import Decoder, SimpleAutoencoder
from catdog.config import Config
from catdog.data import random_crops, to_model_range
from catdog.decoder_gan import DecoderObjective, draw_augment, shard_augment
from catdog.device import autocast
from catdog.diffusion import ConditionalDenoiseDiffusion, build_diffusion
from catdog.distributed import current_world, loss_module
from catdog.refiner import Refiner
from catdog.training_loop import TrainingLoop, batch_indices, make_optimizer


def train_autoencoder(config: Config, images, labels, state_path: Path, metrics_path: Path,
                      device: torch.device) -> SimpleAutoencoder:
    """Train SimpleAutoencoder on uint8 images (N, 32, 32, 3), resuming from state_path if present."""
    cfg, run, world = config.ae, config.run, current_world()
    torch.manual_seed(run.seed)                                   # initial weights
    model = SimpleAutoencoder(cfg).to(device)
    opt = make_optimizer(model, cfg.ae_lr, cfg.ae_weight_decay)
    generator = torch.Generator().manual_seed(run.seed)         # flips and latent noise
    state = {"model": model, "optimizer": opt}
    adversarial = AdversarialTerm(cfg, world, device) if cfg.adv_weight > 0 else None
    if adversarial is not None:
        state["adversarial"] = adversarial
    loop = TrainingLoop("autoencoder", config, ("ae",), state_path, metrics_path,
                        (cfg.ae_lr, cfg.ae_warmup_steps, cfg.ae_train_steps), cfg.ae_batch_size, state,
                        generator, device)
    x_all = to_model_range(images).to(device)                   # (N, 3, 32, 32) in [-1, 1]
    y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
    shard = world.shard(cfg.ae_batch_size)                       # this process's part of each batch
    step_loss = loss_module(model, world, run.compile)           # model.loss, in DDP if distributed
    model.train()
    for step, lr in loop.steps():
        # 1. global batch in a fixed order per (seed, epoch), random horizontal flips, latent noise;
        #    every rank draws all of it and keeps its shard
        idx = batch_indices(len(x_all), cfg.ae_batch_size, step, run.seed)
        flip = torch.rand(len(idx), generator=generator) < 0.5
        noise = torch.randn(len(idx), cfg.latent_dim, generator=generator)
        idx, flip, noise = idx[shard].to(device), flip[shard].to(device), noise[shard].to(device)
        x, y = x_all[idx], y_all[idx]
        if cfg.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        # 2. loss (+ the adversarial term once it is on) and update
        adversarial_on = adversarial is not None and adversarial.active(step)
        with autocast(device, run.bf16):
            loss, parts, x_hat = step_loss(x, y, noise)
            if adversarial_on:
                term, adv_parts = adversarial.loss(model, x, noise, x_hat, step)
                loss = loss + term
                parts.update(loss=loss.detach(), **adv_parts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        opt.step()
        # 3. the discriminator's update: real images against these reconstructions
        if adversarial_on:
            parts["disc"] = adversarial.step(x, x_hat, autocast(device, run.bf16))
        # 4. log and checkpoint
        loop.end_step(step, lr, loss, parts)
    return model.eval()


def train_diffusion(config: Config, z_all: torch.Tensor, y_all: torch.Tensor, state_path: Path,
                    metrics_path: Path, device: torch.device,
                    held_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> ConditionalDenoiseDiffusion:
    """Train the latent diffusion on standardised latents z (N, D), classes y (N,); returns the EMA model.
    With `held_out` latents and classes (the test images'), each logged row carries the EMA model's
    denoising loss on them (`val_loss`): it rises when the prior starts to memorise its training set."""
    cfg, run, world = config.diffusion, config.run, current_world()
    torch.manual_seed(run.seed)
    diffusion = build_diffusion(z_all.shape[1], cfg).to(device)
    ema = copy.deepcopy(diffusion).requires_grad_(False)
    ema_decay = 0.5 ** (1 / cfg.ema_halflife_steps)              # halves a weight's influence per halflife
    opt = make_optimizer(diffusion, cfg.diffusion_lr, cfg.diffusion_weight_decay)
    generator = torch.Generator().manual_seed(run.seed + 1)     # t, noise, label dropout
    loop = TrainingLoop("diffusion", config, ("ae", "diffusion"), state_path, metrics_path,
                        (cfg.diffusion_lr, cfg.diffusion_warmup_steps, cfg.diffusion_train_steps),
                        cfg.diffusion_batch_size, {"model": diffusion, "ema": ema, "optimizer": opt},
                        generator, device,
                        None if held_out is None else lambda: {"val_loss": held_out_loss(ema, *held_out, device)})
    z_all, y_all = z_all.to(device), y_all.to(device)
    shard = world.shard(cfg.diffusion_batch_size)
    step_loss = loss_module(diffusion, world, run.compile)
    diffusion.train()
    for step, lr in loop.steps():
        # 1. global batch and its random inputs (t, noise, label dropout); keep this rank's shard
        idx = batch_indices(len(z_all), cfg.diffusion_batch_size, step, run.seed)
        t, noise, drop = diffusion.draw(len(idx), z_all.shape[1], generator)
        idx, t, noise, drop = (v[shard].to(device) for v in (idx, t, noise, drop))
        # 2. loss and update
        with autocast(device, run.bf16):
            loss = step_loss(z_all[idx], y_all[idx], t, noise, drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), run.grad_clip)
        opt.step()
        # 3. EMA of the weights
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(diffusion.parameters()), 1 - ema_decay)
        # 4. log and checkpoint
        loop.end_step(step, lr, loss, {"loss": loss})
    return ema.eval()


@torch.no_grad()
def held_out_loss(diffusion: ConditionalDenoiseDiffusion, z: torch.Tensor, y: torch.Tensor, device: torch.device,
                  repeats: int = 4, seed: int = 12345) -> float:
    """The conditional training loss on latents z (N, D) of classes y (N,), averaged over `repeats` draws of
    (t, noise) that are the same at every call, so values compare across steps and models."""
    generator = torch.Generator().manual_seed(seed)
    was_training = diffusion.training
    diffusion.eval()
    total = 0.0
    for _ in range(repeats):
        t, noise, _ = diffusion.draw(len(z), z.shape[1], generator)
        keep = torch.zeros(len(z), dtype=torch.bool)                 # no label dropout: the conditional model
        total += float(diffusion.loss(z.to(device), y.to(device), t.to(device), noise.to(device), keep.to(device)))
    diffusion.train(was_training)
    return round(total / repeats, 6)


def train_decoder(config: Config, decoder: Decoder, latents: torch.Tensor, images, labels, state_path: Path,
                  metrics_path: Path, device: torch.device) -> Decoder:
    """Fine-tune `decoder` (in place) on raw latents (N, latent_dim) of uint8 images (N, 32, 32, 3) of
    classes (N,) with the adversarial objective of decoder_gan.py; the encoder is not involved (its
    latents are given). Returns the decoder in eval mode."""
    cfg, run, world = config.decoder, config.run, current_world()
    torch.manual_seed(run.seed)                                   # the discriminator's initial weights
    decoder = decoder.to(device)
    objective = DecoderObjective(config, world, device)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.decoder_lr, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(run.seed + 3)     # latent noise, augmentations
    loop = TrainingLoop("decoder", config, ("ae", "decoder"), state_path, metrics_path,
                        (cfg.decoder_lr, cfg.decoder_warmup_steps, cfg.decoder_train_steps), cfg.decoder_batch_size,
                        {"model": decoder, "optimizer": opt, "objective": objective}, generator, device)
    x_all, latents = to_model_range(images).to(device), latents.to(device)
    y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
    shard = world.shard(cfg.decoder_batch_size)
    last_layer = decoder.output_conv().weight
    decoder.train()
    for step, lr in loop.steps():
        # 1. global batch: latents plus the autoencoder's training noise, their images, and four
        #    augmentations (feature-matching pair, fake for the decoder, real and fake for D); keep the shard
        idx = batch_indices(len(x_all), cfg.decoder_batch_size, step, run.seed)
        noise = config.ae.latent_noise_std * torch.randn(len(idx), latents.shape[1], generator=generator)
        pair, fake_g, real_d, fake_d = (shard_augment(draw_augment(len(idx), generator), shard, device)
                                        for _ in range(4))
        idx, noise = idx[shard].to(device), noise[shard].to(device)
        x, y = x_all[idx], y_all[idx]
        # 2. the decoder's loss and update (gradients averaged over ranks)
        with autocast(device, run.bf16):
            x_hat = decoder(latents[idx] + noise).float()
            loss, parts = objective.decoder_loss(last_layer, x_hat, x, y, pair, fake_g, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        world.average_gradients(decoder)
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), run.grad_clip)
        opt.step()
        # 3. the discriminator's update: augmented reals against augmented reconstructions, R1
        parts["disc"] = objective.disc_step(x, x_hat, y, real_d, fake_d, step, autocast(device, run.bf16))
        # 4. log and checkpoint
        loop.end_step(step, lr, loss, parts)
    return decoder.eval()


def train_refiner(config: Config, images, x_hat_all: torch.Tensor, labels, state_path: Path, metrics_path: Path,
                  device: torch.device, init: Refiner | None = None) -> Refiner:
    """Train the refiner on uint8 images (N, 32, 32, 3), their decoder outputs x_hat (N, 3, 32, 32) and
    classes (N,), from random weights or from those of `init` (a refiner of the same shape, for a
    decoder that changed); returns the EMA model."""
    cfg, run, world = config.refiner, config.run, current_world()
    torch.manual_seed(run.seed)
    refiner = Refiner(cfg).to(device)
    if init is not None:
        refiner.load_state_dict(init.state_dict())
    x_all, x_hat_all = to_model_range(images).to(device), x_hat_all.to(device)
    refiner.set_residual_std(x_all - x_hat_all)                  # measured once, stored with the weights
    ema = copy.deepcopy(refiner).requires_grad_(False)
    ema_decay = 0.5 ** (1 / cfg.refiner_ema_halflife_steps)
    opt = make_optimizer(refiner, cfg.refiner_lr, 0.0)
    generator = torch.Generator().manual_seed(run.seed + 2)     # crops, t, noise
    loop = TrainingLoop("refiner", config, ("ae", "refiner"), state_path, metrics_path,
                        (cfg.refiner_lr, cfg.refiner_warmup_steps, cfg.refiner_train_steps),
                        cfg.refiner_batch_size, {"model": refiner, "ema": ema, "optimizer": opt}, generator, device)
    y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
    shard, size = world.shard(cfg.refiner_batch_size), cfg.refiner_crop_px
    step_loss = loss_module(refiner, world, run.compile, method="loss_on")
    refiner.train()
    for step, lr in loop.steps():
        # 1. global batch of (image, decoder output) pairs, the same random crop of both, t and noise
        idx = batch_indices(len(x_all), cfg.refiner_batch_size, step, run.seed)
        corners = torch.randint(0, 32 - size + 1, (len(idx), 2), generator=generator)
        t, noise, _ = refiner.draw(len(idx), (3, size, size), generator)
        idx, corners, t, noise = (v[shard].to(device) for v in (idx, corners, t, noise))
        x, x_hat = (random_crops(v[idx], corners, size) for v in (x_all, x_hat_all))
        # 2. loss and update
        with autocast(device, run.bf16):
            loss = step_loss(x, x_hat, y_all[idx], t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), run.grad_clip)
        opt.step()
        # 3. EMA of the weights
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(refiner.parameters()), 1 - ema_decay)
        # 4. log and checkpoint
        loop.end_step(step, lr, loss, {"loss": loss})
    return ema.eval()
