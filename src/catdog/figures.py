"""Make every figure of a trained run from its real models and real sampler trajectories.

Called at the end of `catdog run` and by `catdog visualize`. Seeds are fixed, so rerunning writes
the same pictures. The trajectory figures decode the actual z_t of a DDIM run from pure noise
(never a re-noised finished sample), clamped only to the pixel range.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from catdog.data import CLASS_NAMES, create_cat_dog_dataset, to_uint8
from catdog.metrics import linear_probe_accuracy, psnr_db
from catdog.pipeline import RunPaths, ensure_latents, load_autoencoder, load_diffusion, require_run
from catdog.sample import decode_latents, generate_images, sample_latents
from catdog.train import reconstruct_images
from catdog.viz import (create_diffusion_animation, generate_samples_grid, plot_training_curves,
                        visualize_denoising_steps, visualize_latent_space, visualize_reconstructions)

N_RECON_PER_CLASS = 8
N_PATH_FRAMES = 8
TRAJECTORY_SEED_OFFSET = 1000            # trajectories use seed + offset + class, apart from the grid


def trajectory(autoencoder, diffusion, class_id: int, seed: int, steps: int, guidance: float
               ) -> tuple[torch.Tensor, np.ndarray]:
    """One sample's real reverse trajectory: z_t after every DDIM step (T+1, D) and its decoded frames."""
    y = torch.tensor([class_id], device=diffusion.alpha_bar.device)
    _, traj = sample_latents(diffusion, y, seed, steps, guidance, return_trajectory=True)
    z_path = traj[:, 0]                                                      # (steps + 1, D)
    return z_path, to_uint8(decode_latents(autoencoder, z_path))


def frame_labels(steps: int) -> list[str]:
    """'pure noise', then 'step i/steps' after each DDIM step."""
    return ["pure noise"] + [f"step {i}/{steps}" for i in range(1, steps + 1)]


def write_all_figures(paths: RunPaths, data=None, device: torch.device = torch.device("cpu")) -> list:
    """Write reconstructions, latent t-SNE, sample grid, GIFs, denoising paths and curves."""
    require_run(paths.root, "autoencoder", "diffusion")
    autoencoder, config = load_autoencoder(paths.root, device)
    diffusion, _ = load_diffusion(paths.root, device)
    latents = ensure_latents(paths, autoencoder, data, device, config.ae.hflip)   # cached, or encoded now
    run = config.run
    out = paths.figures
    written = []
    tqdm.write(f"[figures] writing to {out}")

    # 1. reconstructions: the first test cats and dogs, test-set PSNR in the title
    test_images, test_labels = create_cat_dog_dataset("test", data)
    recon_uint8 = reconstruct_images(autoencoder, test_images, device)
    shown = np.concatenate([np.flatnonzero(test_labels == c)[:N_RECON_PER_CLASS] for c in range(2)])
    written.append(visualize_reconstructions(test_images[shown], recon_uint8[shown], test_labels[shown],
                                             out / "reconstructions.png", psnr_db(test_images, recon_uint8)))

    # 2. latent space: t-SNE of test latents, linear-probe accuracy in the title
    n_train = len(latents["train_latents"]) // (2 if config.ae.hflip else 1)   # unflipped ones come first
    probe = linear_probe_accuracy(latents["train_latents"][:n_train].numpy(),
                                  latents["train_labels"][:n_train].numpy(),
                                  latents["test_latents"].numpy(), latents["test_labels"].numpy())
    n = min(run.n_eval_latents, len(test_labels))
    written.append(visualize_latent_space(latents["test_latents"][:n].numpy(),
                                          latents["test_labels"][:n].numpy(), out / "latent_tsne.png", probe))

    # 3. sample grid: EMA model, fixed seed, DDIM
    k = run.figure_samples_per_class
    labels = np.repeat(np.arange(len(CLASS_NAMES)), k)
    images = generate_images(autoencoder, diffusion, labels, run.seed, run.sample_steps, run.guidance)
    written.append(generate_samples_grid(
        images, labels, out / "samples.png",
        f"samples: DDIM {run.sample_steps} steps, guidance {run.guidance}, seed {run.seed}"))

    # 4-5. per class: GIF of the real reverse process, and its path in a PCA of the test latents
    z_test = autoencoder.normalize(latents["test_latents"].to(device)).cpu().numpy()
    pca_mean, pca_axes = pca_fit(z_test, 2)
    background = (z_test - pca_mean) @ pca_axes.T
    for c, name in enumerate(CLASS_NAMES):
        z_path, frames = trajectory(autoencoder, diffusion, c, run.seed + TRAJECTORY_SEED_OFFSET + c,
                                    run.sample_steps, run.guidance)
        labels_c = frame_labels(run.sample_steps)
        written.append(create_diffusion_animation(frames, labels_c, out / f"denoising_{name}.gif"))
        pick = np.unique(np.linspace(0, len(frames) - 1, N_PATH_FRAMES).round().astype(int))
        path_2d = (z_path.cpu().numpy() - pca_mean) @ pca_axes.T
        written.append(visualize_denoising_steps(
            frames[pick], [labels_c[i] for i in pick], path_2d, background, latents["test_labels"].numpy(),
            out / f"denoising_path_{name}.png", f"{name}: DDIM trajectory from noise to sample "
            f"(guidance {run.guidance}), in the PCA plane of the test latents"))

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
