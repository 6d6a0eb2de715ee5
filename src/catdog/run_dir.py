"""A run folder: where each artifact lives, how to load a trained run, and its cached latents.

Everything that only reads a run (sample, figures, evaluate, export) depends on this module, never
on training. The files:

    config.json                resolved config of the last training command
    autoencoder.safetensors    AE weights + latent mean/std, config in metadata
    latents.safetensors        raw train latents (+ mirrored copies) and test latents, with labels,
                               naming the autoencoder file they were encoded with
    diffusion.safetensors      EMA diffusion weights, config in metadata, names its AE file
    decoder.safetensors        the fine-tuned decoder (if the run has that stage), names its AE file;
                               loading the autoencoder puts it in place of the AE's own decoder
    refiner.safetensors        EMA refiner weights + residual scale (if the run has that stage), names
                               its AE file and the decoder file it was trained on
    *_state.pt                 training state while a stage is unfinished
    metrics.jsonl              one line per logging interval
    eval.json                  what `catdog evaluate` measured
    figures/                   see figures.py
    .lock                      held (flock) by the command writing into the folder; names it

A folder is a catdog run if its config.json is a catdog config. Commands write only into a missing or
empty folder or a run of their own, clear only the files above, and one at a time (`locked`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from catdog.autoencoder import Decoder, SimpleAutoencoder
from catdog.checkpoint import load_into, load_weights, read_metadata, save_weights
from catdog.config import Config, SampleConfig, config_from_dict
from catdog.data import cache_dir, create_cat_dog_dataset, to_uint8
from catdog.diffusion import ConditionalDenoiseDiffusion, build_diffusion
from catdog.errors import UserError
from catdog.lineage import check_artifact, check_run, file_digest
from catdog.refiner import Refiner
from catdog.sample import REFINER_SEED_OFFSET, generate_images, images_from_latents
from catdog.translate import check_strength, interpolate_latents, invert_latents, refine_frames, translate_latents


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
    def decoder(self) -> Path: return self.root / "decoder.safetensors"
    @property
    def decoder_state(self) -> Path: return self.root / "decoder_state.pt"
    @property
    def refiner(self) -> Path: return self.root / "refiner.safetensors"
    @property
    def refiner_state(self) -> Path: return self.root / "refiner_state.pt"
    @property
    def metrics(self) -> Path: return self.root / "metrics.jsonl"
    @property
    def eval(self) -> Path: return self.root / "eval.json"
    @property
    def figures(self) -> Path: return self.root / "figures"
    @property
    def lock(self) -> Path: return self.root / ".lock"

    def owned(self) -> list[Path]:
        """Every file or folder of this run that catdog wrote and may delete (those that exist)."""
        names = ("config", "autoencoder", "ae_state", "latents", "diffusion", "diffusion_state", "decoder",
                 "decoder_state", "refiner", "refiner_state", "metrics", "eval", "figures")
        return [getattr(self, n) for n in names if getattr(self, n).exists()]


@dataclass(frozen=True)
class Run:
    """A trained run: its autoencoder, diffusion model and refiner (None where not trained) and config."""
    paths: RunPaths
    autoencoder: SimpleAutoencoder
    diffusion: ConditionalDenoiseDiffusion | None
    config: Config
    refiner: Refiner | None = None
    data_sha256: str | None = None       # the data it was checked against when loaded (None: not checked)

    def generate(self, labels, sample: SampleConfig, progress: bool = False, return_latents: bool = False):
        """uint8 images (N, 32, 32, 3) for class labels (N,) with these settings; refined if the run has a
        refiner and `sample.refiner` is on. The one path from a run to its samples."""
        refiner = self.refiner if sample.refiner else None
        return generate_images(self.autoencoder, self.diffusion, labels, sample.seed, sample.steps, sample.guidance,
                               progress=progress, return_latents=return_latents, sampler=sample.sampler,
                               refiner=refiner, refiner_steps=sample.refiner_steps, eta=sample.eta,
                               guidance_interval=sample.guidance_interval)

    def img2img(self, images: np.ndarray, target_labels, strength: float, sample: SampleConfig = SampleConfig(),
                progress: bool = False) -> np.ndarray:
        """uint8 images (N, 32, 32, 3) turned toward target classes (N,): encoded, noised to `strength` of
        the sampling schedule, denoised toward the target with guidance, decoded and refined (translate.py).
        Strength 0 gives the (refined) reconstructions, 1 a fresh sample from the same seed."""
        check_strength(strength)
        z0 = self.autoencoder.normalize(self.autoencoder.encode_images(images).to(self.autoencoder.latent_mean.device))
        latent_of = lambda y, seed, z: translate_latents(self.diffusion, z, y, strength, sample, seed)
        return images_from_latents(self.autoencoder, self.diffusion, latent_of, target_labels, sample.seed,
                                   progress=progress, refiner=self.refiner if sample.refiner else None,
                                   refiner_steps=sample.refiner_steps, guidance=sample.guidance, inputs=z0)

    def interpolate(self, ends, classes: tuple[int, int], frames: int = 9, sample: SampleConfig = SampleConfig()
                    ) -> np.ndarray:
        """uint8 (frames, 32, 32, 3) from one end to the other by deterministic DDIM (translate.py). `ends`:
        two seeds (the frames start from their interpolated noise; the end frames are `generate` of each
        seed and class) or two uint8 images (32, 32, 3) of the given classes (their DDIM-inverted latents,
        with the conditional model at guidance 1)."""
        if sample.sampler != "ddim" or sample.eta != 0:
            raise UserError("interpolation needs the deterministic sampler: --sampler ddim with --eta 0")
        device = self.autoencoder.latent_mean.device
        dim = self.diffusion.model.output.out_features
        if all(isinstance(e, (int, np.integer)) for e in ends):
            seeds = tuple(int(e) for e in ends)
            start = tuple(torch.randn(1, dim, generator=torch.Generator().manual_seed(s)).to(device) for s in seeds)
            guidance = sample.guidance
        else:
            images = np.stack([np.asarray(e) for e in ends])
            z0 = self.autoencoder.normalize(self.autoencoder.encode_images(images).to(device))
            start = tuple(invert_latents(self.diffusion, z0[i:i + 1], torch.tensor([classes[i]], device=device),
                                         sample.steps) for i in range(2))
            seeds, guidance = (sample.seed, sample.seed), 1.0
        z, shares = interpolate_latents(self.diffusion, start, classes, frames, sample, guidance)
        x = self.autoencoder.decode_latents(z)
        return refine_frames(self.refiner if sample.refiner else None, x, classes, seeds, shares, sample.refiner_steps)

    def refine_reconstructions(self, images: np.ndarray, labels, sample: SampleConfig) -> np.ndarray | None:
        """uint8 (N, 32, 32, 3): the refiner applied to the decoder's reconstructions of uint8 images of
        the given classes; None if the run has no refiner or `sample.refiner` is off."""
        if self.refiner is None or not sample.refiner:
            return None
        x_hat = self.autoencoder.reconstruct_x(images).clamp(-1, 1)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=x_hat.device)
        return to_uint8(self.refiner.refine(x_hat, y, sample.seed + REFINER_SEED_OFFSET, sample.refiner_steps))


def read_eval(paths: RunPaths) -> dict | None:
    """What `catdog evaluate` wrote in the run folder; None if nothing, or if the file is not a JSON
    object (truncated, edited), with a warning, since the numbers are only shown."""
    if not paths.eval.is_file():
        return None
    try:
        measured = json.loads(paths.eval.read_text())
    except (OSError, ValueError) as e:
        measured = e
    if isinstance(measured, dict):
        return measured
    print(f"catdog: warning: {paths.eval} is not a JSON object of results; ignored (rerun catdog evaluate)",
          file=sys.stderr)
    return None


def is_catdog_run(root: Path) -> bool:
    """Whether root holds a config.json that catdog wrote (a catdog config)."""
    try:
        stored = json.loads((Path(root) / "config.json").read_text())
        config_from_dict(stored)
        return isinstance(stored, dict) and "ae" in stored
    except (OSError, ValueError, UserError):
        return False


def check_writable_run(root: Path, what: str = "--run-dir") -> None:
    """A folder catdog may write a run into: missing, empty (but for a lock), or a catdog run."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{what} {root}: is a file, not a folder")
    if root.is_dir() and any(p.name != ".lock" for p in root.iterdir()) and not is_catdog_run(root):
        raise UserError(f"{what} {root}: not empty and not a catdog run folder (no catdog config.json); "
                        "choose a new or empty folder")


def remove_owned(paths: RunPaths, keep: tuple[Path, ...] = ()) -> list[str]:
    """Delete catdog's own files in a run folder (never anything else); their names."""
    removed = []
    for path in paths.owned():
        if path in keep:
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        removed.append(path.name)
    return removed


@contextmanager
def locked(root: Path, command: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on a run folder while a command writes into it. The kernel
    releases it when the process ends however it ends, so a killed command never blocks the next."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".lock", "a+")
    except OSError as e:
        raise UserError(f"{root}: cannot write ({e.strerror or e})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(f"{root} is in use by {holder}; wait for it to finish (one command per run folder)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"catdog {command} (pid {os.getpid()})")
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def writer_of(root: Path) -> str | None:
    """Who holds the run folder's lock (a command writing into it: "catdog run (pid N)"), or None. Reads
    only: a read-only folder without a lock file is free."""
    try:
        handle = open(Path(root) / ".lock")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


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


def load_autoencoder(run_dir: Path, device: torch.device = torch.device("cpu")
                     ) -> tuple[SimpleAutoencoder, Config]:
    """The trained autoencoder of a run folder, with the decoder stage's decoder if the run has one,
    and the config the autoencoder was trained with."""
    paths = RunPaths(Path(run_dir))
    autoencoder, config = _load(paths.autoencoder, lambda c: SimpleAutoencoder(c.ae), device)
    if paths.decoder.is_file():
        check_artifact(paths, "decoder")
        autoencoder.decoder = load_decoder(paths.root, device)[0]
    return autoencoder, config


def load_decoder(run_dir: Path, device: torch.device = torch.device("cpu")) -> tuple[Decoder, Config]:
    """The decoder stage's fine-tuned decoder and its config."""
    return _load(RunPaths(Path(run_dir)).decoder, lambda c: Decoder(c.ae), device)


def load_diffusion(run_dir: Path, device: torch.device = torch.device("cpu")
                   ) -> tuple[ConditionalDenoiseDiffusion, Config]:
    """The trained (EMA) diffusion model of a run folder and its config."""
    return _load(RunPaths(Path(run_dir)).diffusion, lambda c: build_diffusion(c.ae.latent_dim, c.diffusion), device)


def load_refiner(run_dir: Path, device: torch.device = torch.device("cpu")) -> tuple[Refiner, Config]:
    """The trained (EMA) refiner of a run folder and its config."""
    return _load(RunPaths(Path(run_dir)).refiner, lambda c: Refiner(c.refiner), device)


def _load(path: Path, build, device: torch.device):
    """Weights file -> (the module `build(config)` makes, in float32 on device, eval mode; its config)."""
    tensors, config_dict, _ = load_weights(path)
    config = _config_of(path, config_dict)
    module = build(config)
    load_into(module, {k: v.float() for k, v in tensors.items()}, path)
    return module.to(device).eval(), config


def _config_of(path: Path, config_dict: dict) -> Config:
    try:
        return config_from_dict(config_dict)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def load_run(run_dir: Path, device: torch.device = torch.device("cpu"), need_diffusion: bool = True,
             data_sha256: str | None = None) -> Run:
    """Load a trained run folder whose artifacts were made from each other (lineage.check_run) and, if
    `data_sha256` is given, from that data; without `need_diffusion`, an autoencoder-only run loads too."""
    paths = require_run(run_dir, "autoencoder", *(("diffusion",) if need_diffusion else ()))
    check_run(paths, data_sha256)
    autoencoder, config = load_autoencoder(paths.root, device)
    diffusion = load_diffusion(paths.root, device)[0] if paths.diffusion.is_file() else None
    refiner = load_refiner(paths.root, device)[0] if paths.refiner.is_file() else None
    return Run(paths, autoencoder, diffusion, config, refiner, data_sha256)


# --- cached latents -------------------------------------------------------------------------
def encode_dataset(autoencoder: SimpleAutoencoder, data, hflip: bool) -> dict[str, torch.Tensor]:
    """Raw latents of the train images (then their mirrors, if hflip) and of the test images."""
    train_images, train_labels = create_cat_dog_dataset("train", data)
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train = [autoencoder.encode_images(train_images)]
    if hflip:
        train.append(autoencoder.encode_images(train_images, flip=True))
    return {
        "train_latents": torch.cat(train),
        "train_labels": torch.as_tensor(train_labels).repeat(len(train)),
        "test_latents": autoencoder.encode_images(test_images),
        "test_labels": torch.as_tensor(test_labels),
    }


def encode_shifted(autoencoder: SimpleAutoencoder, data, px: int, hflip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw latents and labels of the training images (then their mirrors, if hflip) shifted by every
    (dx, dy) in [-px, px]^2 but (0, 0), borders edge-replicated: (N * ((2 px + 1)^2 - 1) [* 2], D)."""
    images, labels = create_cat_dog_dataset("train", data)
    if hflip:
        images, labels = np.concatenate([images, images[:, :, ::-1]]), np.concatenate([labels, labels])
    padded = np.pad(images, ((0, 0), (px, px), (px, px), (0, 0)), mode="edge")
    latents = [autoencoder.encode_images(np.ascontiguousarray(padded[:, px + dy:px + dy + 32, px + dx:px + dx + 32]))
               for dy in range(-px, px + 1) for dx in range(-px, px + 1) if dx or dy]
    return torch.cat(latents), torch.as_tensor(labels).repeat(len(latents))


def cached_shifted(paths: RunPaths, autoencoder: SimpleAutoencoder, data, data_sha256: str, px: int, hflip: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`encode_shifted` for the run's autoencoder file, kept in the user cache (cache_dir()/latents, named by
    that file's digest, the data's, px and hflip): a resumed or retrained prior on the same autoencoder
    skips the encoding, which is most of the stage's first half hour on two slow cores."""
    made = {"autoencoder_sha256": file_digest(paths.autoencoder), "data_sha256": data_sha256,
            "shift_px": str(px), "hflip": str(hflip)}
    name = f"shifted_{made['autoencoder_sha256']}_{data_sha256}_{px}px_{int(hflip)}.safetensors"
    path = cache_dir() / "latents" / name
    try:
        tensors, _, meta = load_weights(path)
        if all(meta.get(k) == v for k, v in made.items()):
            return tensors["latents"], tensors["labels"]
    except UserError:                                     # missing or unreadable: encode (and rewrite) it
        pass
    latents, labels = encode_shifted(autoencoder, data, px, hflip)
    try:                                                  # a cache that cannot be written only costs time
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(path, {"latents": latents, "labels": labels}, {}, **made)
    except (OSError, UserError):
        pass
    return latents, labels


def read_latents(paths: RunPaths, data_sha256: str | None = None) -> dict[str, torch.Tensor] | None:
    """The run's latent cache if it was encoded with the run's current autoencoder from the data
    `data_sha256` names (when given and recorded), else None."""
    if not paths.latents.is_file():
        return None
    tensors, _, meta = load_weights(paths.latents)
    if meta.get("autoencoder_sha256") != file_digest(paths.autoencoder):
        return None
    return None if data_sha256 and meta.get("data_sha256", data_sha256) != data_sha256 else tensors


def write_latents(paths: RunPaths, latents: dict[str, torch.Tensor], data_sha256: str) -> None:
    save_weights(paths.latents, latents, {}, autoencoder_sha256=file_digest(paths.autoencoder), data_sha256=data_sha256)


def run_latents(run: Run, data=None) -> dict[str, torch.Tensor]:
    """The run's latents: the cache if fresh, else encoded now in memory (readers never write it)."""
    return read_latents(run.paths, run.data_sha256) or encode_dataset(run.autoencoder, data, run.config.ae.hflip)


def unmirrored(latents: dict[str, torch.Tensor], hflip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training latents and labels of the images as they are (the mirrored copies come after)."""
    n = len(latents["train_latents"]) // (2 if hflip else 1)
    return latents["train_latents"][:n], latents["train_labels"][:n]


# --- export ---------------------------------------------------------------------------------
def export_run(run_dir: Path, out_dir: Path, fp16: bool = True, force: bool = False) -> list[Path]:
    """A slim copy of a trained run for sampling and evaluation: its weight files (optionally fp16),
    config, metrics log and eval.json; no training state, latent cache or figures. A fine-tuned
    decoder (the decoder stage) is merged into the exported autoencoder file, which saves its size
    again; the exported diffusion and refiner name that file, so the copy is a consistent run.
    The target is a new or empty folder, or (with force) an earlier export, never the run itself; the
    source's lineage is verified before anything is copied, so an export never launders a mixed folder."""
    src, dst = require_run(run_dir, "autoencoder", "diffusion"), RunPaths(Path(out_dir))
    check_run(src)
    if dst.root.resolve() == src.root.resolve():
        raise UserError(f"--out {dst.root}: is the run folder itself; export into another folder")
    if dst.root.exists() and not dst.root.is_dir():
        raise UserError(f"--out {dst.root}: is a file, not a folder")
    if dst.root.is_dir() and any(p.name != ".lock" for p in dst.root.iterdir()):
        if not is_export(dst):
            raise UserError(f"--out {dst.root}: not empty and not an earlier catdog export; choose a new folder")
        if not force:
            raise UserError(f"--out {dst.root}: holds an earlier export; add --force to replace it")
    with locked(dst.root, "export"):
        remove_owned(dst)
        written = []
        for name in ("autoencoder", "diffusion", "refiner"):
            if not getattr(src, name).is_file():
                continue
            tensors, config, meta = load_weights(getattr(src, name))
            extra = {k: v for k, v in meta.items() if k not in ("config", "format_version", "exported_from", "dtype")}
            if name == "autoencoder" and src.decoder.is_file():   # the decoder stage's decoder replaces its own
                tensors.update({f"decoder.{k}": v for k, v in load_weights(src.decoder)[0].items()})
                extra["decoder_merged_from"] = file_digest(src.decoder)
            if fp16:
                tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
            if "autoencoder_sha256" in extra:
                extra["autoencoder_sha256"] = file_digest(dst.autoencoder)
            if "decoder_sha256" in extra:                         # its decoder is now the autoencoder's own
                extra["decoder_sha256"] = ""
            save_weights(getattr(dst, name), tensors, config, **extra, exported_from=src.root.resolve().name,
                         dtype="float16" if fp16 else "float32")
            written.append(getattr(dst, name))
        for path in (src.metrics, src.eval):
            if path.is_file():
                (dst.root / path.name).write_bytes(path.read_bytes())
                written.append(dst.root / path.name)
        # the run's config.json: each weights file keeps its own, and a stage taken over from another
        # run (benchmarks/train_prior.py) may carry sections that are not the run's
        dst.config.write_text(src.config.read_text() if src.config.is_file() else json.dumps(config, indent=2) + "\n")
    return written + [dst.config]


def is_export(paths: RunPaths) -> bool:
    """Whether a folder holds a `catdog export` (its autoencoder file records where it came from)."""
    try:
        return "exported_from" in read_metadata(paths.autoencoder)
    except UserError:
        return False
