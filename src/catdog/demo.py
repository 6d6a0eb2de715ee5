"""What the demo page does with a trained run, without any web code: make a grid, replay one sample's
real reverse process, turn a sample into the other class at rising strength, walk between two seeds,
reconstruct an uploaded picture and turn it into a cat or a dog, and find the training images nearest
to a sample (is it copying?).

Every operation is a plain function of a loaded run and explicit settings, so the same seed and
settings give the same images as `catdog sample`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
import torch

from catdog.config import SampleConfig, validate_sampling
from catdog.data import CLASS_NAMES, create_cat_dog_dataset, to_model_range, to_uint8
from catdog.errors import UserError
from catdog.figures import frame_labels, trajectory
from catdog.pictures import read_upload
from catdog.lineage import data_digest
from catdog.run_dir import RunPaths, load_run, read_eval, read_latents, unmirrored, writer_of
from catdog.translate import check_strength

MAX_IMAGES = 64
MAX_GUIDANCE = 20.0
MORPH_FRAMES = 9
WATCHED = ("config", "autoencoder", "decoder", "diffusion", "refiner", "latents", "eval")   # what load_run reads


class RunChanging(UserError):
    """The run folder is being written (or was changed into something that does not load): the page
    cannot serve the run's model until that is over."""


@dataclass
class Neighbour:
    index: int                            # into the training images
    label: int
    distance: float


class Demo:
    """A loaded run and the training images, with one method per thing the page offers."""

    def __init__(self, run_dir, device: torch.device = torch.device("cpu"), data=None):
        self.paths, self.data, self.device = RunPaths(run_dir), data, device
        self.data_sha256 = data_digest(data)
        self.train_images, self.train_labels = create_cat_dog_dataset("train", data)
        self._latents_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        writer = writer_of(self.paths.root)
        if writer is not None:
            raise RunChanging(f"{self.paths.root} is being written by {writer}; the demo serves it when that "
                              "has finished")
        loaded_from = self._files()
        self.run = load_run(self.paths.root, self.device, data_sha256=self.data_sha256)
        self.measured = read_eval(self.run.paths)
        with self._latents_lock:
            self._train_latents: torch.Tensor | None = None
        self.loaded_from = loaded_from

    def _files(self) -> tuple:
        """What the loaded model was read from: (name, mtime, size) of each run file there is."""
        found = []
        for name in WATCHED:
            try:
                stat = getattr(self.paths, name).stat()
            except OSError:
                continue
            found.append((name, stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def refresh(self) -> bool:
        """Reload the run if its files changed since it was loaded (a `catdog run --force` while the page
        is served), so the page always serves the folder's model; True if it reloaded. A folder that is
        being written, or no longer loads, is a RunChanging error until that is over."""
        if self._files() == self.loaded_from:
            return False
        try:
            self._load()
        except RunChanging:
            raise
        except UserError as e:
            raise RunChanging(f"the run folder changed and no longer loads: {e}") from None
        return True

    def info(self) -> dict:
        """Which model is loaded and what `catdog evaluate` measured for it."""
        info = {"run_dir": str(self.run.paths.root), "n_steps": self.run.diffusion.n_steps,
                "defaults": SampleConfig().__dict__, "max_images": MAX_IMAGES}
        if self.measured:
            info["measured"] = {k: self.measured.get(k) for k in ("n_samples", "fid", "kid", "class_fidelity",
                                                                   "recon_fid", "floor_fid", "guidance", "steps")}
        return info

    def check(self, sample: SampleConfig) -> SampleConfig:
        validate_sampling(sample, self.run.diffusion.n_steps)
        if not 0 <= sample.guidance <= MAX_GUIDANCE:
            raise UserError(f"guidance must be in 0..{MAX_GUIDANCE:g}, got {sample.guidance}")
        if not 0 <= sample.seed < 2**63:
            raise UserError(f"seed must be in 0..2^63-1, got {sample.seed}")
        return sample

    def generate(self, class_id: int, n: int, sample: SampleConfig) -> np.ndarray:
        """uint8 (n, 32, 32, 3): exactly what `catdog sample` writes for these settings."""
        if not 1 <= n <= MAX_IMAGES:
            raise UserError(f"number of images must be in 1..{MAX_IMAGES}, got {n}")
        self.check(sample)
        return self.run.generate(np.full(n, class_id), sample)

    def denoising(self, class_id: int, sample: SampleConfig) -> tuple[np.ndarray, list[str]]:
        """The real reverse trajectory of one sample, decoded after every step (as the figures do)."""
        self.check(sample)
        _, frames = trajectory(self.run.autoencoder, self.run.diffusion, class_id, sample.seed, sample)
        return frames, frame_labels(len(frames) - 1)

    def morph(self, class_id: int, sample: SampleConfig, frames: int = MORPH_FRAMES
              ) -> tuple[np.ndarray, list[float]]:
        """The sample of `class_id` at this seed (first frame), then that sample turned into the other
        class by img2img at rising strengths up to 1 (a fresh sample of the other class from the same
        seed): uint8 (frames, 32, 32, 3) and the strengths (0 for the sample itself)."""
        self.check(sample)
        source = self.run.generate([class_id], sample)
        strengths = np.linspace(0, 1, frames).tolist()
        return np.concatenate([source] + [self.run.img2img(source, [1 - class_id], s, sample)
                                          for s in strengths[1:]]), strengths

    def translate(self, image: np.ndarray, class_id: int, strength: float, sample: SampleConfig) -> np.ndarray:
        """A uint8 image (32, 32, 3) turned toward `class_id` by img2img at `strength`."""
        self.check(sample)
        check_strength(strength)
        return self.run.img2img(image[None], [class_id], strength, sample)[0]

    def interpolate(self, seeds: tuple[int, int], classes: tuple[int, int], sample: SampleConfig,
                    frames: int = MORPH_FRAMES) -> np.ndarray:
        """Frames between the samples of two seeds (and classes), by deterministic DDIM."""
        self.check(sample)
        return self.run.interpolate(seeds, classes, frames, replace(sample, sampler="ddim", eta=0.0))

    def reconstruct(self, upload: bytes) -> tuple[np.ndarray, np.ndarray, float]:
        """An uploaded PNG/JPEG -> (its 32x32 centre crop, the decoder's reconstruction, P(dog) of the latent
        classifier)."""
        image = read_upload(upload)
        autoencoder = self.run.autoencoder
        with torch.no_grad():
            latent = autoencoder.encode(to_model_range(image[None]).to(self.device))
            p_dog = torch.softmax(autoencoder.classifier(latent), dim=1)[0, CLASS_NAMES.index("dog")]
            recon = to_uint8(autoencoder.decode(latent))[0]
        return image, recon, float(p_dog)

    def nearest(self, image: np.ndarray, k: int = 3) -> dict[str, list[Neighbour]]:
        """The k training images nearest to a uint8 image (32, 32, 3): by pixel distance (RMS over the
        uint8 values) and by latent distance (Euclidean, between the autoencoder's raw latents)."""
        if image.shape != (32, 32, 3) or image.dtype != np.uint8:
            raise UserError("the image to compare must be 32x32 RGB")
        pixel = np.sqrt(((self.train_images.reshape(len(self.train_images), -1).astype(np.float32)
                          - image.reshape(1, -1).astype(np.float32)) ** 2).mean(1))
        latent = self.run.autoencoder.encode_images(image[None])
        latent_dist = (self.train_latents() - latent).norm(dim=1).numpy()
        return {"pixel": self._top(pixel, k), "latent": self._top(latent_dist, k)}

    def train_latents(self) -> torch.Tensor:
        """Raw latents of the (unmirrored) training images: the run's cache, or encoded once (about
        20 s for pretrained/ on 2 cores, so `catdog demo` starts it in the background)."""
        with self._latents_lock:
            if self._train_latents is None:
                cached = read_latents(self.run.paths, self.run.data_sha256)
                self._train_latents = (unmirrored(cached, self.run.config.ae.hflip)[0] if cached is not None
                                       else self.run.autoencoder.encode_images(self.train_images))
        return self._train_latents

    def _top(self, distances: np.ndarray, k: int) -> list[Neighbour]:
        order = np.argsort(distances, kind="stable")[:k]
        return [Neighbour(int(i), int(self.train_labels[i]), float(distances[i])) for i in order]
