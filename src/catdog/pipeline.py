"""The main job: the stages that train a run folder, then its figures.

    STAGES = autoencoder -> latents -> diffusion -> decoder -> refiner    (then figures.write_all_figures)

Each stage leaves an artifact (run_dir.py lists them) and is skipped when that artifact exists and
matches the config; a stage that was killed resumes from its `*_state.pt`; `force` retrains from
scratch. When a stage is (re)built, the artifacts of every later stage are deleted, since they were
derived from the old one. A new stage joins by adding one `Stage` to `STAGES`.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from catdog.checkpoint import check_config_matches, load_weights, save_weights
from catdog.config import Config, SampleConfig, config_to_dict, validate_sampling
from catdog.data import check_training_data, create_cat_dog_dataset
from catdog.device import pick_device
from catdog.distributed import current_world
from catdog.errors import UserError
from catdog.figures import write_all_figures
from catdog.run_dir import (RunPaths, check_writable_run, decoder_digest, encode_dataset, encode_shifted, file_digest,
                            load_autoencoder, load_decoder, load_diffusion, load_refiner, locked, read_latents,
                            remove_owned, write_latents)
from catdog.train import train_autoencoder, train_decoder, train_diffusion, train_refiner


@dataclass
class Job:
    """What the stages share: the folder, the config, the data source, the device, and what the
    stages so far produced (models, latents) by name."""
    paths: RunPaths
    config: Config
    data: object
    device: torch.device
    products: dict = field(default_factory=dict)


def say(message: str) -> None:
    """A status line, from rank 0 only."""
    if current_world().is_main:
        tqdm.write(message)


def build_autoencoder(job: Job) -> None:
    """Load the run's autoencoder if trained with this config; otherwise train (or resume) it."""
    paths, config, world = job.paths, job.config, current_world()
    if paths.autoencoder.exists():
        model, trained = load_autoencoder(paths.root, job.device)
        check_config_matches(paths.autoencoder, config_to_dict(trained), config_to_dict(config), ("ae",))
        say(f"[autoencoder] trained already: {paths.autoencoder} (use --force to retrain)")
        job.products["autoencoder"] = model
        return
    clear_after("autoencoder", paths)
    images, labels = create_cat_dog_dataset("train", job.data)
    start = time.perf_counter()
    model = train_autoencoder(config, images, labels, paths.ae_state, paths.metrics, job.device)
    if world.is_main:
        # the latent statistics are measured on what diffusion will train on (images and mirrors)
        latents = encode_dataset(model, job.data, config.ae.hflip)
        model.set_latent_stats(latents["train_latents"].to(job.device))
        save_weights(paths.autoencoder, model.state_dict(), config_to_dict(config))
        write_latents(paths, latents)
        paths.ae_state.unlink(missing_ok=True)
        say(f"[autoencoder] trained in {time.perf_counter() - start:.0f} s -> {paths.autoencoder}")
    world.barrier()
    if not world.is_main:                                         # pick up rank 0's measured stats
        model, _ = load_autoencoder(paths.root, job.device)
    job.products["autoencoder"] = model


def build_latents(job: Job) -> None:
    """The cached raw latents of this run's autoencoder; encoded again only if stale or missing."""
    paths, world = job.paths, current_world()
    latents = read_latents(paths)
    if latents is None:
        world.barrier()                                           # all ranks saw the stale cache
        if world.is_main:
            write_latents(paths, encode_dataset(job.products["autoencoder"], job.data, job.config.ae.hflip))
        world.barrier()
        latents = read_latents(paths)
    job.products["latents"] = latents


def trained_already(job: Job, name: str, load, sections: tuple[str, ...]) -> bool:
    """Whether stage `name`'s weights exist; if so they must match this config and autoencoder."""
    path = getattr(job.paths, name)
    if not path.exists():
        return False
    _, trained = load(job.paths.root, job.device)
    check_config_matches(path, config_to_dict(trained), config_to_dict(job.config), sections)
    meta = load_weights(path)[2]
    if meta.get("autoencoder_sha256") != file_digest(job.paths.autoencoder):
        raise UserError(f"{path} belongs to a different autoencoder; rerun with --force")
    if name in DECODER_USERS and meta.get("decoder_sha256", "") != decoder_digest(job.paths):
        raise UserError(f"{path} was trained on a different decoder; rerun with --force")
    say(f"[{name}] trained already: {path} (use --force to retrain)")
    return True


DECODER_USERS = ("refiner",)             # stages trained on the decoder's outputs: they name the decoder


def save_stage(job: Job, name: str, model: torch.nn.Module, start: float) -> None:
    """Rank 0 writes the finished stage's (EMA) weights, naming their autoencoder (and decoder), and
    drops its state."""
    paths = job.paths
    if current_world().is_main:
        names = {"decoder_sha256": decoder_digest(paths)} if name in DECODER_USERS else {}
        save_weights(getattr(paths, name), model.state_dict(), config_to_dict(job.config),
                     autoencoder_sha256=file_digest(paths.autoencoder), **names)
        getattr(paths, f"{name}_state").unlink(missing_ok=True)
        say(f"[{name}] trained in {time.perf_counter() - start:.0f} s -> {getattr(paths, name)}")
    current_world().barrier()


def build_diffusion(job: Job) -> None:
    """Load the run's diffusion model if trained with this config and AE; otherwise train it."""
    if trained_already(job, "diffusion", load_diffusion, ("ae", "diffusion")):
        return
    clear_after("diffusion", job.paths)
    start = time.perf_counter()
    latents = job.products["latents"]
    normalize = lambda raw: job.products["autoencoder"].normalize(raw.to(job.device)).cpu()
    train_latents, train_labels = latents["train_latents"], latents["train_labels"]
    if job.config.diffusion.diffusion_shift_px:
        say(f"[diffusion] encoding the training images shifted by up to {job.config.diffusion.diffusion_shift_px} px")
        shifted = encode_shifted(job.products["autoencoder"], job.data, job.config.diffusion.diffusion_shift_px,
                                 job.config.ae.hflip)
        train_latents, train_labels = torch.cat([train_latents, shifted[0]]), torch.cat([train_labels, shifted[1]])
    ema = train_diffusion(job.config, normalize(train_latents), train_labels.long(),
                          job.paths.diffusion_state, job.paths.metrics, job.device,
                          held_out=(normalize(latents["test_latents"]), latents["test_labels"].long()))
    save_stage(job, "diffusion", ema, start)


def cached_images(job: Job, n_latents: int) -> np.ndarray:
    """The uint8 training images in the latent cache's order: the images, then their mirrors if the
    cache holds those too (n_latents is twice the images)."""
    images = create_cat_dog_dataset("train", job.data)[0]
    return np.concatenate([images, images[:, :, ::-1]]) if n_latents == 2 * len(images) else images


def build_decoder(job: Job) -> None:
    """Load the run's fine-tuned decoder if trained with this config and AE; otherwise fine-tune the
    autoencoder's decoder (encoder frozen) on the cached training latents (images and mirrors), and
    put it in the autoencoder for the stages after. Skipped if decoder_train_steps is 0."""
    if job.config.decoder.decoder_train_steps == 0 or trained_already(job, "decoder", load_decoder, ("ae", "decoder")):
        return
    clear_after("decoder", job.paths)
    start = time.perf_counter()
    autoencoder, latents = job.products["autoencoder"], job.products["latents"]
    images = cached_images(job, len(latents["train_latents"]))
    decoder = train_decoder(job.config, copy.deepcopy(autoencoder.decoder), latents["train_latents"], images,
                            latents["train_labels"], job.paths.decoder_state, job.paths.metrics, job.device)
    save_stage(job, "decoder", decoder, start)
    autoencoder.decoder = decoder


def build_refiner(job: Job, init=None) -> None:
    """Load the run's refiner if trained with this config and AE; otherwise train it on the decoder's
    outputs for the cached training latents (images and mirrors), from random weights or from `init`'s.
    Skipped if refiner_train_steps is 0."""
    if job.config.refiner.refiner_train_steps == 0 or trained_already(job, "refiner", load_refiner, ("ae", "refiner")):
        return
    clear_after("refiner", job.paths)
    start = time.perf_counter()
    autoencoder, latents = job.products["autoencoder"], job.products["latents"]
    x_hat = autoencoder.decode_latents(autoencoder.normalize(latents["train_latents"].to(job.device))).cpu()
    images = cached_images(job, len(x_hat))
    ema = train_refiner(job.config, images, x_hat, latents["train_labels"], job.paths.refiner_state,
                        job.paths.metrics, job.device, init)
    save_stage(job, "refiner", ema, start)


@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[[Job], None]
    artifacts: tuple[str, ...]           # RunPaths attributes this stage writes (deleted by --force)


STAGES = (
    Stage("autoencoder", build_autoencoder, ("autoencoder", "ae_state")),
    Stage("latents", build_latents, ("latents",)),
    Stage("diffusion", build_diffusion, ("diffusion", "diffusion_state")),
    Stage("decoder", build_decoder, ("decoder", "decoder_state")),
    Stage("refiner", build_refiner, ("refiner", "refiner_state")),
)


def clear_after(name: str, paths: RunPaths) -> None:
    """Delete the artifacts of every stage after `name` (rank 0): they came from its old version."""
    if not current_world().is_main:
        return
    later = STAGES[[s.name for s in STAGES].index(name) + 1:]
    for attr in [a for s in later for a in s.artifacts] + ["eval"]:      # eval.json measured the old one
        getattr(paths, attr).unlink(missing_ok=True)


def prepare_run_dir(run_dir: Path, config: Config, force: bool) -> RunPaths:
    """Claim the folder (missing, empty or a catdog run) and write config.json; with force, first
    delete every file catdog wrote there, and say which (rank 0)."""
    paths = RunPaths(Path(run_dir))
    world = current_world()
    if not world.is_main:
        world.barrier()
        return paths
    check_writable_run(paths.root)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        if force:
            removed = remove_owned(paths)
            say(f"[run] --force removed: {', '.join(removed) if removed else 'nothing (no trained stage yet)'}")
        paths.config.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    except OSError as e:
        raise UserError(f"--run-dir {paths.root}: cannot write ({e.strerror or e})") from None
    world.barrier()
    return paths


def run_all(config: Config, run_dir: Path, data=None, device_name: str | None = None, force: bool = False,
            until: str = "refiner", figures: bool = True, sample: SampleConfig = SampleConfig()) -> RunPaths:
    """The main job: build every stage up to `until` that is missing, then (optionally) the figures."""
    world = current_world()
    device = pick_device(device_name)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    if config.run.compile and device.type != "cuda":
        raise UserError(f"--compile needs CUDA, this run is on {device}; add --no-compile")
    if figures:
        validate_sampling(sample, config.diffusion.n_steps)
    check_training_data(data)
    check_writable_run(run_dir)
    with locked(run_dir, "run") if world.is_main else nullcontext():   # one command per folder
        paths = prepare_run_dir(run_dir, config, force)
        say(f"[run] {paths.root} on {device}" + (f", {world.size} processes" if world.size > 1 else ""))
        job = Job(paths, config, data, device)
        names = [s.name for s in STAGES]
        for stage in STAGES[:names.index(until) + 1]:
            stage.build(job)
        if figures and world.is_main:
            write_all_figures(paths, data, device, sample)
        world.barrier()                                           # no rank leaves while rank 0 works
    return paths
