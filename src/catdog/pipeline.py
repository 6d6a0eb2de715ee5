"""The run folder and its stages: autoencoder -> cached latents -> diffusion -> figures.

Each stage leaves an artifact in `runs/<name>/` and is skipped when that artifact exists (and its
config matches); `force` retrains from scratch. A stage that was killed resumes from its
`*_state.pt`. Retraining the autoencoder deletes what was derived from it (latents, diffusion).

    config.json                resolved config of the last command
    autoencoder.safetensors    AE weights + latent mean/std, config in metadata
    latents.safetensors        raw train latents (+ flipped copies) and test latents, with labels
    diffusion.safetensors      EMA diffusion weights, config in metadata, names its AE file
    ae_state.pt / diffusion_state.pt   training state while a stage is unfinished
    metrics.jsonl              one line per logging interval
    figures/                   see viz.py
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from catdog.autoencoder import SimpleAutoencoder
from catdog.checkpoint import check_config_matches, load_into, load_weights, save_weights
from catdog.config import Config, config_from_dict, config_to_dict
from catdog.data import create_cat_dog_dataset
from catdog.diffusion import ConditionalDenoiseDiffusion, build_diffusion
from catdog.distributed import current_world
from catdog.errors import UserError
from catdog.train import encode_images, train_autoencoder, train_diffusion


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path: return self.root / "config.json"
    @property
    def autoencoder(self) -> Path: return self.root / "autoencoder.safetensors"
    @property
    def ae_state(self) -> Path: return self.root / "ae_state.pt"
    @property
    def latents(self) -> Path: return self.root / "latents.safetensors"
    @property
    def diffusion(self) -> Path: return self.root / "diffusion.safetensors"
    @property
    def diffusion_state(self) -> Path: return self.root / "diffusion_state.pt"
    @property
    def metrics(self) -> Path: return self.root / "metrics.jsonl"
    @property
    def figures(self) -> Path: return self.root / "figures"


def pick_device(name: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; a named device must be available."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device name (try cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return device


def file_digest(path: Path) -> str:
    """First 16 hex digits of a file's sha256 (names the AE a latent cache / diffusion came from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_autoencoder(run_dir: Path, device: torch.device = torch.device("cpu")
                     ) -> tuple[SimpleAutoencoder, Config]:
    """The trained autoencoder of a run folder and the config it was trained with."""
    path = RunPaths(Path(run_dir)).autoencoder
    tensors, config_dict, _ = load_weights(path)
    config = config_from_dict(config_dict)
    model = SimpleAutoencoder(config.ae)
    load_into(model, {k: v.float() for k, v in tensors.items()}, path)
    return model.to(device).eval(), config


def load_diffusion(run_dir: Path, device: torch.device = torch.device("cpu")
                   ) -> tuple[ConditionalDenoiseDiffusion, Config]:
    """The trained (EMA) diffusion model of a run folder and its config."""
    path = RunPaths(Path(run_dir)).diffusion
    tensors, config_dict, _ = load_weights(path)
    config = config_from_dict(config_dict)
    diffusion = build_diffusion(config.ae.latent_dim, config.diffusion)
    load_into(diffusion, {k: v.float() for k, v in tensors.items()}, path)
    return diffusion.to(device).eval(), config


def require_run(run_dir: Path, *files: str) -> RunPaths:
    """RunPaths of an existing run folder holding the named artifacts, else a UserError."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise UserError(f"--run-dir {paths.root}: no such run folder (train one with `catdog run`)")
    for name in files:
        if not getattr(paths, name).is_file():
            raise UserError(f"{getattr(paths, name)}: missing; train it first with `catdog run "
                            f"--run-dir {paths.root}`")
    return paths


def say(message: str) -> None:
    """A status line, from rank 0 only."""
    if current_world().is_main:
        tqdm.write(message)


def prepare_run_dir(run_dir: Path, config: Config, force: bool) -> RunPaths:
    """Create the folder, write config.json; with force, delete every trained artifact (rank 0)."""
    paths = RunPaths(Path(run_dir))
    world = current_world()
    if not world.is_main:
        world.barrier()
        return paths
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        if force:
            for p in (paths.autoencoder, paths.ae_state, paths.latents, paths.diffusion,
                      paths.diffusion_state, paths.metrics):
                p.unlink(missing_ok=True)
        paths.config.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    except OSError as e:
        raise UserError(f"--run-dir {paths.root}: cannot write ({e.strerror or e})") from None
    world.barrier()
    return paths


def ensure_autoencoder(paths: RunPaths, config: Config, data, device: torch.device) -> SimpleAutoencoder:
    """Load the run's autoencoder if trained with this config; otherwise train (or resume) it."""
    if paths.autoencoder.exists():
        model, trained = load_autoencoder(paths.root, device)
        check_config_matches(paths.autoencoder, config_to_dict(trained), config_to_dict(config), ("ae",))
        say(f"[autoencoder] trained already: {paths.autoencoder} (use --force to retrain)")
        return model
    world = current_world()
    if world.is_main:
        for stale in (paths.latents, paths.diffusion, paths.diffusion_state):
            stale.unlink(missing_ok=True)                         # derived from an older AE
    images, labels = create_cat_dog_dataset("train", data)
    start = time.perf_counter()
    model = train_autoencoder(config, images, labels, paths.ae_state, paths.metrics, device)
    if world.is_main:
        # the latent statistics are measured on what diffusion will train on (images and mirrors)
        latents = encode_dataset(model, data, device, config.ae.hflip)
        model.set_latent_stats(latents["train_latents"].to(device))
        save_weights(paths.autoencoder, model.state_dict(), config_to_dict(config))
        save_weights(paths.latents, latents, {}, autoencoder_sha256=file_digest(paths.autoencoder))
        paths.ae_state.unlink(missing_ok=True)
        say(f"[autoencoder] trained in {time.perf_counter() - start:.0f} s -> {paths.autoencoder}")
    world.barrier()
    if not world.is_main:                                         # pick up rank 0's measured stats
        model, _ = load_autoencoder(paths.root, device)
    return model


def encode_dataset(model: SimpleAutoencoder, data, device: torch.device, hflip: bool
                   ) -> dict[str, torch.Tensor]:
    """Raw latents of the train images (then their mirrors, if hflip) and of the test images."""
    train_images, train_labels = create_cat_dog_dataset("train", data)
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train = [encode_images(model, train_images, device)]
    if hflip:
        train.append(encode_images(model, train_images, device, flip=True))
    return {
        "train_latents": torch.cat(train),
        "train_labels": torch.as_tensor(train_labels).repeat(len(train)),
        "test_latents": encode_images(model, test_images, device),
        "test_labels": torch.as_tensor(test_labels),
    }


def ensure_latents(paths: RunPaths, model: SimpleAutoencoder, data, device: torch.device,
                   hflip: bool) -> dict[str, torch.Tensor]:
    """The cached raw latents of this run's autoencoder; encoded again only if stale or missing."""
    ae_digest = file_digest(paths.autoencoder)
    world = current_world()
    if paths.latents.exists():
        tensors, _, meta = load_weights(paths.latents)
        if meta.get("autoencoder_sha256") == ae_digest:
            return tensors
    world.barrier()                                               # all ranks saw the stale cache
    if world.is_main:
        save_weights(paths.latents, encode_dataset(model, data, device, hflip), {},
                     autoencoder_sha256=ae_digest)
    world.barrier()
    return load_weights(paths.latents)[0]


def ensure_diffusion(paths: RunPaths, config: Config, model: SimpleAutoencoder,
                     latents: dict[str, torch.Tensor], device: torch.device) -> ConditionalDenoiseDiffusion:
    """Load the run's diffusion model if trained with this config and AE; otherwise train it."""
    ae_digest = file_digest(paths.autoencoder)
    if paths.diffusion.exists():
        diffusion, trained = load_diffusion(paths.root, device)
        check_config_matches(paths.diffusion, config_to_dict(trained), config_to_dict(config),
                             ("ae", "diffusion"))
        _, _, meta = load_weights(paths.diffusion)
        if meta.get("autoencoder_sha256") != ae_digest:
            raise UserError(f"{paths.diffusion} belongs to a different autoencoder; rerun with --force")
        say(f"[diffusion] trained already: {paths.diffusion} (use --force to retrain)")
        return diffusion
    start = time.perf_counter()
    z = model.normalize(latents["train_latents"].to(device)).cpu()
    ema = train_diffusion(config, z, latents["train_labels"].long(), paths.diffusion_state,
                          paths.metrics, device)
    world = current_world()
    if world.is_main:
        save_weights(paths.diffusion, ema.state_dict(), config_to_dict(config), autoencoder_sha256=ae_digest)
        paths.diffusion_state.unlink(missing_ok=True)
        say(f"[diffusion] trained in {time.perf_counter() - start:.0f} s -> {paths.diffusion}")
    world.barrier()
    return ema


def export_run(run_dir: Path, out_dir: Path, fp16: bool = True, guidance: float | None = None) -> list[Path]:
    """A slim copy of a trained run for sampling and evaluation: both weight files (optionally
    fp16), config, metrics log and eval.json; no training state, latent cache or figures.
    `guidance` replaces the run's default guidance scale (a sampling setting, not a weight)."""
    src, dst = require_run(run_dir, "autoencoder", "diffusion"), RunPaths(Path(out_dir))
    dst.root.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("autoencoder", "diffusion"):
        tensors, config, meta = load_weights(getattr(src, name))
        if guidance is not None:
            config["run"]["guidance"] = guidance
        if fp16:
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        extra = {k: v for k, v in meta.items() if k not in ("config", "format_version")}
        save_weights(getattr(dst, name), tensors, config, **extra, exported_from=str(src.root),
                     dtype="float16" if fp16 else "float32")
        written.append(getattr(dst, name))
    for path in (src.metrics, src.root / "eval.json"):
        if path.is_file():
            (dst.root / path.name).write_bytes(path.read_bytes())
            written.append(dst.root / path.name)
    dst.config.write_text(json.dumps(config, indent=2) + "\n")   # the (possibly updated) config
    return written + [dst.config]


def run_all(config: Config, run_dir: Path, data=None, device_name: str | None = None,
            force: bool = False, stages: tuple[str, ...] = ("ae", "diffusion", "figures")) -> RunPaths:
    """The main job: train what is missing, then write the figures."""
    world = current_world()
    device = pick_device(device_name)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    paths = prepare_run_dir(run_dir, config, force)
    say(f"[run] {paths.root} on {device}" + (f", {world.size} processes" if world.size > 1 else ""))
    model = ensure_autoencoder(paths, config, data, device)
    if "diffusion" in stages or "figures" in stages:
        latents = ensure_latents(paths, model, data, device, config.ae.hflip)
        if "diffusion" in stages:
            ensure_diffusion(paths, config, model, latents, device)
    if "figures" in stages and world.is_main:
        from catdog.figures import write_all_figures
        write_all_figures(paths, data, device)
    world.barrier()                                               # no rank leaves while rank 0 works
    return paths
