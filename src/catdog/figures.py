"""Make every figure of a trained run from its real models and real sampler trajectories.

Called at the end of `catdog run` and by `catdog visualize`; it only reads the run folder (the
latent cache if fresh, else latents encoded in memory) and writes `figures/`. Seeds are fixed, so
rerunning writes the same pictures. The trajectory figures decode the actual z_t of a sampler run
from pure noise (never a re-noised finished sample), clamped only to the pixel range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from catdog.config import SampleConfig
from catdog.data import CLASS_NAMES, create_cat_dog_dataset, to_uint8
from catdog.metrics import linear_probe_accuracy, nearest_neighbours, pixel_rms_rows, psnr_db
from catdog.lineage import data_digest
from catdog.run_dir import RunPaths, load_run, run_latents, unmirrored
from catdog.sample import sample_latents
from catdog.viz import (create_diffusion_animation, generate_samples_grid, plot_training_curves,
                        visualize_denoising_steps, visualize_latent_space, visualize_nearest,
                        visualize_reconstructions, visualize_translations)

N_RECON_PER_CLASS = 8
N_PATH_FRAMES = 8
N_NEAREST_PER_CLASS = 4
SAMPLES_PER_CLASS = 16
TSNE_POINTS = 2000
N_TRANSLATED_PER_CLASS = 4
TRANSLATION_STRENGTHS = (0.3, 0.5, 0.7)
TRAJECTORY_SEED_OFFSET = 1000            # trajectories use seed + offset + class, apart from the grid


def trajectory(autoencoder, diffusion, class_id: int, seed: int, sample: SampleConfig
               ) -> tuple[torch.Tensor, np.ndarray]:
    """One sample's real reverse trajectory: z_t after every sampler step (T+1, D) and its decoded frames."""
    y = torch.tensor([class_id], device=diffusion.alpha_bar.device)
    _, traj = sample_latents(diffusion, y, seed, sample.steps, sample.guidance, return_trajectory=True,
                             sampler=sample.sampler, eta=sample.eta, guidance_interval=sample.guidance_interval)
    z_path = traj[:, 0]                                                      # (steps + 1, D)
    return z_path, to_uint8(autoencoder.decode_latents(z_path))


def frame_labels(steps: int) -> list[str]:
    """'pure noise', then 'step i/steps' after each sampler step."""
    return ["pure noise"] + [f"step {i}/{steps}" for i in range(1, steps + 1)]


def describe(sample: SampleConfig, n_steps: int) -> str:
    """'DDIM 50 steps, guidance 9.0' (or 'DDPM 1000 steps, ...')."""
    steps = n_steps if sample.sampler == "ddpm" else sample.steps
    return f"{sample.sampler.upper()} {steps} steps, guidance {sample.guidance}"


def write_all_figures(paths: RunPaths, data=None, device: torch.device = torch.device("cpu"),
                      sample: SampleConfig = SampleConfig(), per_class: int = SAMPLES_PER_CLASS,
                      tsne_points: int = TSNE_POINTS) -> list[Path]:
    """Write reconstructions, latent t-SNE, sample grid, GIFs, denoising paths and curves."""
    run = load_run(paths.root, device, data_sha256=data_digest(data))
    autoencoder, diffusion, config = run.autoencoder, run.diffusion, run.config
    latents = run_latents(run, data)
    out = paths.figures
    written = []
    tqdm.write(f"[figures] writing to {out}")

    # 1. reconstructions: the first test cats and dogs (decoded, and refined if the run has a refiner),
    #    the decoder's test-set PSNR in the title
    test_images, test_labels = create_cat_dog_dataset("test", data)
    recon_uint8 = autoencoder.reconstruct_images(test_images)
    shown = np.concatenate([np.flatnonzero(test_labels == c)[:N_RECON_PER_CLASS] for c in range(2)])
    refined = run.refine_reconstructions(test_images[shown], test_labels[shown], sample)
    written.append(visualize_reconstructions(test_images[shown], recon_uint8[shown], test_labels[shown],
                                             out / "reconstructions.png", psnr_db(test_images, recon_uint8),
                                             refined))

    # 2. latent space: t-SNE of test latents, linear-probe accuracy in the title
    train_latents, train_labels = unmirrored(latents, config.ae.hflip)
    probe = linear_probe_accuracy(train_latents.numpy(), train_labels.numpy(),
                                  latents["test_latents"].numpy(), latents["test_labels"].numpy())
    n = min(tsne_points, len(test_labels))
    written.append(visualize_latent_space(latents["test_latents"][:n].numpy(),
                                          latents["test_labels"][:n].numpy(), out / "latent_tsne.png", probe))

    # 3. sample grid: EMA model, fixed seed
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    images, sampled = run.generate(labels, sample, return_latents=True)
    how = describe(sample, diffusion.n_steps) + (", refined" if run.refiner is not None and sample.refiner else "")
    written.append(generate_samples_grid(images, labels, out / "samples.png", f"samples: {how}, seed {sample.seed}"))

    # 3b. is it copying? the first samples of each class beside their nearest training images
    show = np.concatenate([np.flatnonzero(labels == c)[:N_NEAREST_PER_CLASS] for c in range(len(CLASS_NAMES))])
    train_images = create_cat_dog_dataset("train", data)[0]
    pixel_d, pixel_i = nearest_neighbours(pixel_rms_rows(images[show]), pixel_rms_rows(train_images))
    latent_d, latent_i = nearest_neighbours(sampled[show], train_latents.numpy())
    written.append(visualize_nearest(images[show], {"nearest in pixels": (train_images[pixel_i], pixel_d),
                                                    "nearest in latent": (train_images[latent_i], latent_d)},
                                     out / "nearest_training.png",
                                     "samples and their nearest training images (RMS pixel / latent L2 distance)"))

    # 4-5. per class: GIF of the real reverse process, and its path in a PCA of the test latents
    z_test = autoencoder.normalize(latents["test_latents"].to(device)).cpu().numpy()
    pca_mean, pca_axes = pca_fit(z_test, 2)
    background = (z_test - pca_mean) @ pca_axes.T
    for c, name in enumerate(CLASS_NAMES):
        z_path, frames = trajectory(autoencoder, diffusion, c, sample.seed + TRAJECTORY_SEED_OFFSET + c, sample)
        labels_c = frame_labels(len(frames) - 1)
        written.append(create_diffusion_animation(frames, labels_c, out / f"denoising_{name}.gif"))
        pick = np.unique(np.linspace(0, len(frames) - 1, N_PATH_FRAMES).round().astype(int))
        path_2d = (z_path.cpu().numpy() - pca_mean) @ pca_axes.T
        written.append(visualize_denoising_steps(
            frames[pick], [labels_c[i] for i in pick], path_2d, background, latents["test_labels"].numpy(),
            out / f"denoising_path_{name}.png",
            f"{name}: {how}, from noise to sample, in the PCA plane of the test latents"))

    # 5b. cat <-> dog: test images of each class translated to the other at three strengths
    shown = np.concatenate([np.flatnonzero(test_labels == c)[:N_TRANSLATED_PER_CLASS] for c in range(2)])
    targets = 1 - test_labels[shown]
    translations = [run.img2img(test_images[shown], targets, s, sample) for s in TRANSLATION_STRENGTHS]
    written.append(visualize_translations(test_images[shown], translations, list(TRANSLATION_STRENGTHS),
                                          test_labels[shown], out / "translations.png",
                                          f"cat <-> dog: img2img at strength s ({how})"))

    # 6. training curves
    if paths.metrics.exists():
        written.append(plot_training_curves(paths.metrics, out / "training_curves.png"))
    tqdm.write(f"[figures] wrote {len(written)} files")
    return written


def pca_fit(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and the top-k principal axes (k, D) of rows x (N, D)."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k]
