"""The main job: the stages that train a run folder, then its figures.

    STAGES = autoencoder -> latents -> diffusion -> decoder -> refiner    (then figures.write_all_figures)

Each stage leaves an artifact (run_dir.py lists them) and is skipped when that artifact exists and
was made from this folder's earlier artifacts, this data and this config (lineage.py); every present
artifact is checked before anything in the folder is written, so a refused run changes nothing. A
stage that was killed resumes from its `*_state.pt`; `retrain` deletes the named stages' artifacts
and `force` every one. When a stage is (re)built, the artifacts of the stages made from it are
deleted. A new stage joins by adding one `Stage` to `STAGES`.
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

from catdog.checkpoint import load_state, read_metadata, save_weights
from catdog.config import Config, SampleConfig, config_to_dict, validate_sampling
from catdog.data import check_training_data, create_cat_dog_dataset
from catdog.device import pick_device
from catdog.distributed import current_world
from catdog.errors import UserError
from catdog.figures import write_all_figures
from catdog.lineage import SHAPED_BY, check_artifact, data_digest, made_from
from catdog.run_dir import (RunPaths, cached_shifted, check_writable_run, encode_dataset, is_export,
                            load_autoencoder, locked, read_latents, remove_owned, write_latents)
from catdog.train import train_autoencoder, train_decoder, train_diffusion, train_refiner


@dataclass
class Job:
    """What the stages share: the folder, the config, the data source (and its digest), the device, and
    what the stages so far produced (models, latents) by name."""
    paths: RunPaths
    config: Config
    data: object
    device: torch.device
    products: dict = field(default_factory=dict)
    data_sha256: str = ""

    def __post_init__(self):
        self.data_sha256 = self.data_sha256 or data_digest(self.data)


def say(message: str) -> None:
    """A status line, from rank 0 only."""
    if current_world().is_main:
        tqdm.write(message)


def build_autoencoder(job: Job) -> None:
    """Load the run's autoencoder if trained with this config; otherwise train (or resume) it."""
    paths, config, world = job.paths, job.config, current_world()
    if trained_already(job, "autoencoder"):
        job.products["autoencoder"] = load_autoencoder(paths.root, job.device)[0]
        return
    clear_after("autoencoder", paths)
    images, labels = create_cat_dog_dataset("train", job.data)
    start = time.perf_counter()
    model = train_autoencoder(config, images, labels, paths.ae_state, paths.metrics, job.device)
    if world.is_main:
        # the latent statistics are measured on what diffusion will train on (images and mirrors)
        latents = encode_dataset(model, job.data, config.ae.hflip)
        model.set_latent_stats(latents["train_latents"].to(job.device))
        save_weights(paths.autoencoder, model.state_dict(), config_to_dict(config),
                     **made_from(paths, "autoencoder", job.data_sha256))
        write_latents(paths, latents, job.data_sha256)
        paths.ae_state.unlink(missing_ok=True)
        say(f"[autoencoder] trained in {time.perf_counter() - start:.0f} s -> {paths.autoencoder}")
    world.barrier()
    if not world.is_main:                                         # pick up rank 0's measured stats
        model, _ = load_autoencoder(paths.root, job.device)
    job.products["autoencoder"] = model


def build_latents(job: Job) -> None:
    """The cached raw latents of this run's autoencoder; encoded again only if stale or missing."""
    paths, world = job.paths, current_world()
    latents = read_latents(paths, job.data_sha256)
    if latents is None:
        world.barrier()                                           # all ranks saw the stale cache
        if world.is_main:
            write_latents(paths, encode_dataset(job.products["autoencoder"], job.data, job.config.ae.hflip),
                          job.data_sha256)
        world.barrier()
        latents = read_latents(paths, job.data_sha256)
    job.products["latents"] = latents


def trained_already(job: Job, name: str) -> bool:
    """Whether stage `name`'s weights exist; if so they were made from this folder's earlier artifacts,
    this data and this config (else a UserError)."""
    path = getattr(job.paths, name)
    if not path.exists():
        return False
    check_artifact(job.paths, name, job.data_sha256, config_to_dict(job.config))
    say(f"[{name}] trained already: {path} (--retrain {name} retrains it)")
    return True


def save_stage(job: Job, name: str, model: torch.nn.Module, start: float) -> None:
    """Rank 0 writes the finished stage's (EMA) weights, naming what they were made from, and drops
    its state."""
    paths = job.paths
    if current_world().is_main:
        save_weights(getattr(paths, name), model.state_dict(), config_to_dict(job.config),
                     **made_from(paths, name, job.data_sha256))
        getattr(paths, f"{name}_state").unlink(missing_ok=True)
        say(f"[{name}] trained in {time.perf_counter() - start:.0f} s -> {getattr(paths, name)}")
    current_world().barrier()


def build_diffusion(job: Job) -> None:
    """Load the run's diffusion model if trained with this config and AE; otherwise train it."""
    if trained_already(job, "diffusion"):
        return
    clear_after("diffusion", job.paths)
    start = time.perf_counter()
    latents = job.products["latents"]
    normalize = lambda raw: job.products["autoencoder"].normalize(raw.to(job.device)).cpu()
    train_latents, train_labels = latents["train_latents"], latents["train_labels"]
    if job.config.diffusion.diffusion_shift_px:
        say(f"[diffusion] the training images shifted by up to {job.config.diffusion.diffusion_shift_px} px: "
            "their latents (encoded once per autoencoder, then cached)")
        encode = lambda: cached_shifted(job.paths, job.products["autoencoder"], job.data, job.data_sha256,
                                        job.config.diffusion.diffusion_shift_px, job.config.ae.hflip)
        shifted = encode() if current_world().is_main else None  # one rank encodes into the cache
        current_world().barrier()
        shifted = shifted or encode()
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
    put it in the autoencoder for the stages after. Skipped if decoder_train_steps is 0, or if the
    autoencoder file already holds it (an export merges it in)."""
    if (job.config.decoder.decoder_train_steps == 0 or trained_already(job, "decoder")
            or decoder_merged(job.paths)):
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
    if job.config.refiner.refiner_train_steps == 0 or trained_already(job, "refiner"):
        return
    clear_after("refiner", job.paths)
    start = time.perf_counter()
    autoencoder, latents = job.products["autoencoder"], job.products["latents"]
    x_hat = autoencoder.decode_latents(autoencoder.normalize(latents["train_latents"].to(job.device))).cpu()
    images = cached_images(job, len(x_hat))
    ema = train_refiner(job.config, images, x_hat, latents["train_labels"], job.paths.refiner_state,
                        job.paths.metrics, job.device, init)
    save_stage(job, "refiner", ema, start)


def decoder_merged(paths: RunPaths) -> bool:
    """Whether the autoencoder file carries the decoder stage's decoder (an export merges it in)."""
    return paths.autoencoder.is_file() and "decoder_merged_from" in read_metadata(paths.autoencoder)


@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[[Job], None]
    artifacts: tuple[str, ...]           # RunPaths attributes this stage writes (deleted by --force)
    inputs: tuple[str, ...] = ()         # the stages it is made from: rebuilding one of them deletes it


STAGES = (
    Stage("autoencoder", build_autoencoder, ("autoencoder", "ae_state")),
    Stage("latents", build_latents, ("latents",), ("autoencoder",)),
    Stage("diffusion", build_diffusion, ("diffusion", "diffusion_state"), ("latents",)),
    Stage("decoder", build_decoder, ("decoder", "decoder_state"), ("latents",)),
    Stage("refiner", build_refiner, ("refiner", "refiner_state"), ("latents", "decoder")),
)
RETRAINABLE = ("autoencoder", "diffusion", "decoder", "refiner")


def made_from_stage(name: str) -> list[Stage]:
    """The stages made, directly or through others, from stage `name`."""
    found, frontier = [], {name}
    for stage in STAGES:                 # in order, so inputs come before the stages made from them
        if frontier & set(stage.inputs):
            found.append(stage)
            frontier.add(stage.name)
    return found


def clear_after(name: str, paths: RunPaths) -> None:
    """Delete the artifacts of the stages made from `name` (rank 0): they came from its old version."""
    if not current_world().is_main:
        return
    for attr in [a for s in made_from_stage(name) for a in s.artifacts] + ["eval"]:   # eval.json measured the old
        getattr(paths, attr).unlink(missing_ok=True)


def stage_files(names) -> list[str]:
    """RunPaths attributes of the named stages and of every stage made from them."""
    stages = {s.name: s for s in STAGES}
    return [a for n in names for s in [stages[n], *made_from_stage(n)] for a in s.artifacts]


def prepare_run_dir(run_dir: Path, config: Config, force: bool, retrain: tuple[str, ...] = (),
                    data_sha256: str | None = None) -> RunPaths:
    """Claim the folder (missing, empty or a catdog run), check every artifact it holds against this
    data and config (unless it is to be deleted), and only then change it: with force delete every
    file catdog wrote there, with retrain the named stages' and those made from them, and say which;
    then write config.json (rank 0)."""
    paths = RunPaths(Path(run_dir))
    world = current_world()
    if not world.is_main:
        world.barrier()
        return paths
    check_writable_run(paths.root)
    if "decoder" in retrain and decoder_merged(paths):
        raise UserError(f"{paths.autoencoder} holds the decoder stage's decoder merged in (an export), so it "
                        "cannot be fine-tuned again from the autoencoder's own; train into another --run-dir")
    doomed = [getattr(paths, a) for a in stage_files(retrain)] + ([paths.eval] if retrain else [])
    if not force:
        for name in RETRAINABLE:
            weights, state = (getattr(paths, a) for a in next(s for s in STAGES if s.name == name).artifacts)
            if weights.is_file() and weights not in doomed:
                try:
                    check_artifact(paths, name, data_sha256, config_to_dict(config))
                except UserError as e:
                    if not is_export(paths):
                        raise
                    raise UserError(f"{paths.root} is a catdog export, complete for sampling; `catdog run` "
                                    f"accepts it only with the settings it was trained with, and here {e}") from None
            if state.is_file() and state not in doomed:               # a resume must continue the same run
                load_state(state, config_to_dict(config), SHAPED_BY[name],
                           hint=f"resume with the flags it was started with, or rerun with --retrain {name}")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        removed = remove_owned(paths) if force else remove_owned(paths, keep=tuple(
            p for p in paths.owned() if p not in doomed))
        if force or retrain:
            say(f"[run] --{'force' if force else 'retrain'} removed: "
                f"{', '.join(removed) if removed else 'nothing (not trained yet)'}")
        paths.config.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    except OSError as e:
        raise UserError(f"--run-dir {paths.root}: cannot write ({e.strerror or e})") from None
    world.barrier()
    return paths


def run_all(config: Config, run_dir: Path, data=None, device_name: str | None = None, force: bool = False,
            until: str = "refiner", figures: bool = True, sample: SampleConfig = SampleConfig(),
            retrain: tuple[str, ...] = ()) -> RunPaths:
    """The main job: build every stage up to `until` that is missing (or named in `retrain`), then
    (optionally) the figures."""
    world = current_world()
    device = pick_device(device_name)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    if config.run.compile and device.type != "cuda":
        raise UserError(f"--compile needs CUDA, this run is on {device}; add --no-compile")
    if figures:
        validate_sampling(sample, config.diffusion.n_steps)
    unknown = set(retrain) - set(RETRAINABLE)
    if unknown:
        raise UserError(f"--retrain {','.join(sorted(unknown))}: not a stage; choose from {', '.join(RETRAINABLE)}")
    check_training_data(data)
    check_writable_run(run_dir)
    data_sha256 = data_digest(data)
    with locked(run_dir, "run") if world.is_main else nullcontext():   # one command per folder
        paths = prepare_run_dir(run_dir, config, force, retrain, data_sha256)
        say(f"[run] {paths.root} on {device}" + (f", {world.size} processes" if world.size > 1 else ""))
        job = Job(paths, config, data, device, data_sha256=data_sha256)
        names = [s.name for s in STAGES]
        for stage in STAGES[:names.index(until) + 1]:
            stage.build(job)
        if figures and world.is_main:
            write_all_figures(paths, data, device, sample)
        world.barrier()                                           # no rank leaves while rank 0 works
    return paths
