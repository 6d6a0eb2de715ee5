"""What the demo page does with a trained run, without any web code: make a grid, replay one sample's
real reverse process, turn a sample into the other class at rising strength, walk between two seeds,
reconstruct an uploaded picture and turn it into a cat or a dog, and find the training images nearest
to a sample (is it copying?).

Every operation is a plain function of a loaded run and explicit settings, so the same seed and
settings give the same images as `catdog sample`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace

import numpy as np
import torch

from catdog.config import SampleConfig, validate_sampling
from catdog.data import CLASS_NAMES, create_cat_dog_dataset, to_model_range, to_uint8
from catdog.errors import UserError
from catdog.figures import frame_labels, trajectory
from catdog.pictures import read_upload
from catdog.run_dir import load_run, read_latents, unmirrored
from catdog.translate import check_strength

MAX_IMAGES = 64
MAX_GUIDANCE = 20.0
MORPH_FRAMES = 9


@dataclass
class Neighbour:
    index: int                            # into the training images
    label: int
    distance: float


class Demo:
    """A loaded run and the training images, with one method per thing the page offers."""

    def __init__(self, run_dir, device: torch.device = torch.device("cpu"), data=None):
        self.run = load_run(run_dir, device)
        self.data, self.device = data, device
        self.train_images, self.train_labels = create_cat_dog_dataset("train", data)
        self._train_latents: torch.Tensor | None = None
        self._latents_lock = threading.Lock()
        path = self.run.paths.eval
        self.measured = json.loads(path.read_text()) if path.is_file() else None

    def info(self) -> dict:
        """Which model is loaded and what `catdog evaluate` measured for it."""
        info = {"run_dir": str(self.run.paths.root), "n_steps": self.run.diffusion.n_steps,
                "defaults": SampleConfig().__dict__, "max_images": MAX_IMAGES}
        if self.measured:
            info["measured"] = {k: self.measured.get(k) for k in ("n_samples", "fid", "kid", "class_fidelity",
                                                                   "recon_fid", "guidance", "steps")}
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
                cached = read_latents(self.run.paths)
                self._train_latents = (unmirrored(cached, self.run.config.ae.hflip)[0] if cached is not None
                                       else self.run.autoencoder.encode_images(self.train_images))
        return self._train_latents

    def _top(self, distances: np.ndarray, k: int) -> list[Neighbour]:
        order = np.argsort(distances, kind="stable")[:k]
        return [Neighbour(int(i), int(self.train_labels[i]), float(distances[i])) for i in order]
