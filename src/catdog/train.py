"""Training loops: `train_autoencoder` and `train_diffusion`, each a plain linear loop (nanoGPT style).

Both use AdamW with linear warm-up then cosine decay, gradient clipping, bf16 autocast (on CUDA and
on CPUs with native bf16), and save their whole state atomically every `checkpoint_every_steps`;
rerunning the same command resumes from it and ends with the same weights as an uninterrupted run
(bitwise on CPU), because every random number comes from one CPU generator whose state is saved, and
the batch order is a pure function of (seed, step). A non-finite loss stops the run before the bad
step is saved.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from catdog.autoencoder import SimpleAutoencoder
from catdog.checkpoint import load_state, save_state
from catdog.config import Config, RunConfig, config_to_dict
from catdog.data import to_model_range, to_uint8, translate
from catdog.diffusion import ConditionalDenoiseDiffusion, build_diffusion
from catdog.discriminator import PatchDiscriminator
from catdog.distributed import current_world, loss_module
from catdog.errors import UserError


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """1) linear warm-up to base_lr, 2) cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of batch `step`: epochs are fresh permutations of range(n) seeded by (seed, epoch)."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), through oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(device: torch.device, enabled: bool) -> bool:
    """bf16 autocast where it pays: on CUDA, and on CPUs with native bf16 (on the 2-core AVX512-BF16
    dev machine a training step is 1.6x (autoencoder) to 2x (diffusion) faster); float32 elsewhere."""
    return enabled and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast if `uses_bf16`, else a no-op (float32). Weights and optimizer stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, enabled))


class MetricsLog:
    """One fixed-field status line per interval, printed and appended to metrics.jsonl: the mean
    of each loss over the interval's steps, summed on the device (no sync until `interval_means`)."""

    def __init__(self, path: Path, stage: str, batch_size: int, start_step: int):
        self.path, self.stage, self.batch_size = path, stage, batch_size
        self.last_time, self.last_step = time.perf_counter(), start_step
        self.keys, self.sums, self.count = (), None, 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        """Add one step's losses; a new set of keys (a term switched on) starts a new mean."""
        values = torch.stack([v.detach().float() for v in parts.values()])
        if tuple(parts) != self.keys:
            self.keys, self.sums, self.count = tuple(parts), torch.zeros_like(values), 0
        self.sums, self.count = self.sums + values, self.count + 1

    def interval_means(self) -> dict[str, torch.Tensor]:
        """Means since the last call (tensors, for `World.mean`), and a fresh interval."""
        means = dict(zip(self.keys, self.sums / max(self.count, 1)))
        self.keys, self.sums, self.count = (), None, 0
        return means

    def write(self, step: int, lr: float, parts: dict, extra: dict | None = None) -> dict:
        parts = {k: float(v) for k, v in parts.items()}           # tensors -> numbers (syncs once)
        now = time.perf_counter()
        per_s = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        record = {"stage": self.stage, "step": step, **{k: round(v, 6) for k, v in parts.items()},
                  "lr": lr, "samples_per_s": round(per_s, 1), **(extra or {})}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        fields = " ".join(f"{k} {v:.4f}" for k, v in parts.items())
        tqdm.write(f"[{self.stage}] step {step:6d} | {fields} | lr {lr:.2e} | {per_s:7.0f} samples/s")
        return record


def uses_cuda_graphs(run: RunConfig, device: torch.device) -> bool:
    """Whether the compiled step replays CUDA graphs, whose outputs the next step overwrites."""
    return run.compile and run.compile_mode == "reduce-overhead" and device.type == "cuda"


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) on CUDA and CPU: on the 2-core CPU an autoencoder
    update takes 1.5 ms instead of 4.5 ms of a ~80 ms step."""
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99),
                             fused=fused or None)


class FiniteGuard:
    """Remembers the first step whose loss was not finite without a GPU sync per step; `check`,
    called before anything is logged or saved, stops the run there. The last good checkpoint stays."""

    def __init__(self, stage: str, state_path: Path, device: torch.device):
        self.stage, self.state_path = stage, state_path
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise UserError(f"{self.stage}: loss became non-finite (nan or inf) at step {step}; stopped "
                            f"without saving, the last good checkpoint ({self.state_path.name}) is kept")


def train_autoencoder(config: Config, images, labels, state_path: Path, metrics_path: Path,
                      device: torch.device) -> SimpleAutoencoder:
    """Train SimpleAutoencoder on uint8 images (N, 32, 32, 3), resuming from state_path if present."""
    cfg, run = config.ae, config.run
    torch.manual_seed(run.seed)                                   # initial weights
    model = SimpleAutoencoder(cfg).to(device)
    opt = _optimizer(model, cfg.ae_lr, cfg.ae_weight_decay)
    generator = torch.Generator().manual_seed(run.seed)         # flips and latent noise
    disc = PatchDiscriminator(cfg.disc_width).to(device) if cfg.adv_weight > 0 else None
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.ae_lr, betas=(0.5, 0.9)) if disc else None
    adv_scale = torch.zeros((), device=device)                  # VQGAN's adaptive weight, refreshed
    world = current_world()
    step = 0
    if state_path.exists():
        state = load_state(state_path, config_to_dict(config), ("ae",))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["optimizer_d"])
            adv_scale.fill_(state["adv_scale"])
        generator.set_state(state["rng"])
        step = state["step"]
        if world.is_main:
            tqdm.write(f"[autoencoder] resuming from {state_path} at step {step}")
    x_all = to_model_range(images).to(device)                   # (N, 3, 32, 32) in [-1, 1]
    y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
    shard = world.shard(cfg.ae_batch_size)                       # this process's part of each batch
    # model.loss and disc.loss, inside DDP if distributed (it syncs their gradients); model.loss
    # compiled if asked. The discriminator's step stays eager: compiled (reduce-overhead), its
    # backward failed with "CUDA error: misaligned address" on the H100 (torch 2.11)
    step_loss = loss_module(model, world, run.compile, run.compile_mode)
    disc_loss = loss_module(disc, world) if disc is not None else None
    graphs = uses_cuda_graphs(run, device)
    start_step = step
    log = MetricsLog(metrics_path, "autoencoder", cfg.ae_batch_size, start_step)
    if world.is_main and uses_bf16(device, run.bf16):
        tqdm.write(f"[autoencoder] bf16 autocast on {device}")
    guard = FiniteGuard("autoencoder", state_path, device)
    model.train()
    for step in tqdm(range(start_step, cfg.ae_train_steps), initial=start_step, total=cfg.ae_train_steps,
                     desc="autoencoder", disable=None if world.is_main else True, mininterval=2):
        lr = lr_at(step, cfg.ae_lr, cfg.ae_warmup_steps, cfg.ae_train_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        if graphs:                                               # CUDA graphs: a new step begins
            torch.compiler.cudagraph_mark_step_begin()
        # 1. global batch: fixed order per (seed, epoch), random horizontal flips (and shifts), latent noise;
        #    every rank draws all of it and keeps its shard
        idx = batch_indices(len(x_all), cfg.ae_batch_size, step, run.seed)
        flip = torch.rand(len(idx), generator=generator) < 0.5
        noise = torch.randn(len(idx), cfg.latent_dim, generator=generator)
        # shifts are drawn only when on, so that runs without them draw the same numbers as before
        p = cfg.ae_translate_px
        shifts = torch.randint(-p, p + 1, (len(idx), 2), generator=generator) if p else None
        idx, flip, noise = idx[shard].to(device), flip[shard].to(device), noise[shard].to(device)
        x, y = x_all[idx], y_all[idx]
        if cfg.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if p:
            x = translate(x, shifts[shard].to(device), p)
        # 2. autoencoder loss and update (the discriminator, if on, is frozen for this part; its
        #    adaptive weight is recomputed every adv_scale_every_steps, outside the compiled loss)
        adversarial = disc is not None and step >= cfg.adv_start_step
        with autocast(device, run.bf16):
            if adversarial:
                disc.requires_grad_(False)
                if (step - cfg.adv_start_step) % cfg.adv_scale_every_steps == 0:
                    scale = world.mean({"s": model.adversarial_scale(x, noise, disc)})["s"]
                    adv_scale.copy_(scale)
                loss, parts, x_hat = step_loss(x, y, noise, disc, adv_scale)
            else:
                loss, parts, x_hat = step_loss(x, y, noise)
        guard.update(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        opt.step()
        # 3. discriminator update: real images against these reconstructions (hinge loss)
        if adversarial:
            disc.requires_grad_(True)
            with autocast(device, run.bf16):
                d_loss = disc_loss(x, x_hat.detach().clone())     # a copy: CUDA graphs reuse x_hat
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["disc"] = d_loss.detach()
        log.add(parts)
        # 4. log and checkpoint (state after `step + 1` updates), on rank 0 only
        done = step + 1
        if done % run.log_every_steps == 0 or done % run.checkpoint_every_steps == 0 \
                or done == cfg.ae_train_steps:                   # before anything is logged or saved
            guard.check()
        if done % run.log_every_steps == 0 or done == cfg.ae_train_steps:
            means = world.mean(log.interval_means())             # over the interval and all ranks
            if world.is_main:
                log.write(done, lr, means)
        if world.is_main and done % run.checkpoint_every_steps == 0 and done < cfg.ae_train_steps:
            extra = {"discriminator": disc.state_dict(), "optimizer_d": opt_d.state_dict(),
                     "adv_scale": float(adv_scale)} if disc else {}
            save_state(state_path, {"stage": "autoencoder", "config": config_to_dict(config),
                                    "step": done, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(), "rng": generator.get_state(), **extra})
    model.eval()
    return model


@torch.no_grad()
def encode_images(model: SimpleAutoencoder, images, device: torch.device, flip: bool = False,
                  batch_size: int = 500) -> torch.Tensor:
    """Raw latents (N, latent_dim) of uint8 images, optionally horizontally flipped, on the CPU."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_model_range(images[i:i + batch_size]).to(device)
        out.append(model.encode(x.flip(3) if flip else x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruct_images(model: SimpleAutoencoder, images, device: torch.device, batch_size: int = 500):
    """uint8 reconstructions (N, 32, 32, 3) of uint8 images through encoder and decoder."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x_hat = model.decode(model.encode(to_model_range(images[i:i + batch_size]).to(device)))
        out.append(to_uint8(x_hat))
    return np.concatenate(out)


def train_diffusion(config: Config, z_all: torch.Tensor, y_all: torch.Tensor, state_path: Path,
                    metrics_path: Path, device: torch.device) -> ConditionalDenoiseDiffusion:
    """Train the latent diffusion on standardised latents z (N, D), classes y (N,); returns the EMA model."""
    cfg, run = config.diffusion, config.run
    torch.manual_seed(run.seed)
    diffusion = build_diffusion(z_all.shape[1], cfg).to(device)
    ema = copy.deepcopy(diffusion).requires_grad_(False)
    ema_decay = 0.5 ** (1 / cfg.ema_halflife_steps)              # halves a weight's influence per halflife
    opt = _optimizer(diffusion, cfg.diffusion_lr, cfg.diffusion_weight_decay)
    generator = torch.Generator().manual_seed(run.seed + 1)     # t, noise, label dropout
    world = current_world()
    step = 0
    if state_path.exists():
        state = load_state(state_path, config_to_dict(config), ("ae", "diffusion"))
        diffusion.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        step = state["step"]
        if world.is_main:
            tqdm.write(f"[diffusion] resuming from {state_path} at step {step}")
    z_all, y_all = z_all.to(device), y_all.to(device)
    shard = world.shard(cfg.diffusion_batch_size)
    step_loss = loss_module(diffusion, world, run.compile, run.compile_mode)
    graphs = uses_cuda_graphs(run, device)
    start_step = step
    log = MetricsLog(metrics_path, "diffusion", cfg.diffusion_batch_size, start_step)
    if world.is_main and uses_bf16(device, run.bf16):
        tqdm.write(f"[diffusion] bf16 autocast on {device}")
    guard = FiniteGuard("diffusion", state_path, device)
    diffusion.train()
    for step in tqdm(range(start_step, cfg.diffusion_train_steps), initial=start_step,
                     total=cfg.diffusion_train_steps,
                     desc="diffusion", disable=None if world.is_main else True, mininterval=2):
        lr = lr_at(step, cfg.diffusion_lr, cfg.diffusion_warmup_steps, cfg.diffusion_train_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        # 1. global batch and its random inputs (t, noise, label dropout); keep this rank's shard
        idx = batch_indices(len(z_all), cfg.diffusion_batch_size, step, run.seed)
        t, noise, drop = diffusion.draw(len(idx), z_all.shape[1], generator)
        idx, t, noise, drop = (v[shard].to(device) for v in (idx, t, noise, drop))
        # 2. loss and update, then the EMA of the weights
        with autocast(device, run.bf16):
            loss = step_loss(z_all[idx], y_all[idx], t, noise, drop)
        guard.update(loss, step)
        log.add({"loss": loss})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), run.grad_clip)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(diffusion.parameters()), 1 - ema_decay)
        # 3. log and checkpoint on rank 0
        done = step + 1
        if done % run.log_every_steps == 0 or done % run.checkpoint_every_steps == 0 \
                or done == cfg.diffusion_train_steps:
            guard.check()
        if done % run.log_every_steps == 0 or done == cfg.diffusion_train_steps:
            means = world.mean(log.interval_means())
            if world.is_main:
                log.write(done, lr, means)
        if world.is_main and done % run.checkpoint_every_steps == 0 and done < cfg.diffusion_train_steps:
            save_state(state_path, {"stage": "diffusion", "config": config_to_dict(config),
                                    "step": done, "model": diffusion.state_dict(), "ema": ema.state_dict(),
                                    "optimizer": opt.state_dict(), "rng": generator.get_state()})
    ema.eval()
    return ema
