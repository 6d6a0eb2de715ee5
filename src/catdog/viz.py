"""Figures from arrays: reconstructions, latent t-SNE, sample grids, denoising GIFs and paths, curves.

Every function takes arrays (uint8 images (N, 32, 32, 3), latents, labels) and an output path, and
knows nothing of training or sampling; figures.py feeds them from a trained run.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from catdog.data import CLASS_NAMES  # noqa: E402

CLASS_COLORS = ("tab:orange", "tab:blue")                   # cat, dog


def _save(fig, out_path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out_path


def image_grid(images: np.ndarray, ncols: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile uint8 images (N, H, W, 3) into one uint8 image, row-major, white padding."""
    n, h, w, _ = images.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return grid.repeat(scale, 0).repeat(scale, 1)


def save_image_grid(images: np.ndarray, out_path, ncols: int = 8, scale: int = 2) -> Path:
    """Write uint8 images (N, 32, 32, 3) as one PNG grid (no matplotlib: fast, exact pixels)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, min(ncols, len(images)), scale=scale)).save(out_path)
    return out_path


def visualize_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                              out_path, psnr_db: float | None = None, refined: np.ndarray | None = None) -> Path:
    """Originals in the top row, their reconstructions below (then, if given, the refined
    reconstructions), each column labelled cat/dog."""
    n = len(originals)
    rows = [("original", originals), ("decoded", reconstructions)] + ([("refined", refined)] if refined is not None else [])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.3 * len(rows)), squeeze=False)
    for i in range(n):
        for row, (_, images) in enumerate(rows):
            ax = axes[row, i]
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, i].set_title(CLASS_NAMES[labels[i]], fontsize=8)
    for row, (name, _) in enumerate(rows):
        axes[row, 0].set_ylabel(name, fontsize=8)
    title = "Autoencoder reconstructions (test images)"
    if psnr_db is not None:
        title += f": test PSNR {psnr_db:.2f} dB"
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def visualize_nearest(samples: np.ndarray, neighbours: dict[str, tuple[np.ndarray, np.ndarray]], out_path,
                      title: str = "") -> Path:
    """Each sample (N, 32, 32, 3) in a column, under it its nearest training image in each named space:
    neighbours = {name: (images (N, 32, 32, 3), distances (N,))}."""
    n, rows = len(samples), [("sample", samples, None)] + [(k, im, d) for k, (im, d) in neighbours.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.45 * len(rows)), squeeze=False)
    for row, (name, images, distances) in enumerate(rows):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if distances is not None:
                ax.set_xlabel(f"{distances[i]:.3g}", fontsize=7)
        axes[row, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def visualize_translations(sources: np.ndarray, translations: list[np.ndarray], strengths: list[float],
                           source_labels: np.ndarray, out_path, title: str = "") -> Path:
    """One row per source image: the source, then its translation to the other class at each strength
    (translations[k] is (N, 32, 32, 3) at strengths[k]), columns headed by their strength."""
    n, cols = len(sources), 1 + len(strengths)
    fig, axes = plt.subplots(n, cols, figsize=(1.0 * cols, 1.0 * n + 0.4), squeeze=False)
    for i in range(n):
        other = CLASS_NAMES[1 - int(source_labels[i])]
        for j, image in enumerate([sources[i]] + [t[i] for t in translations]):
            ax = axes[i, j]
            ax.imshow(image)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0 or source_labels[i] != source_labels[i - 1]:
                head = CLASS_NAMES[int(source_labels[i])] if j == 0 else f"{other} {strengths[j - 1]:g}"
                ax.set_title(head, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return _save(fig, out_path)


def visualize_latent_space(latents: np.ndarray, labels: np.ndarray, out_path,
                           probe_acc: float | None = None, random_state: int = 0) -> Path:
    """t-SNE (scikit-learn, fixed random_state) of latents (N, D), coloured by class."""
    from sklearn.manifold import TSNE
    perplexity = min(30.0, (len(latents) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state).fit_transform(
        np.asarray(latents, dtype=np.float32))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for c, name in enumerate(CLASS_NAMES):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=5, alpha=0.6, c=CLASS_COLORS[c], label=f"{name} ({m.sum()})")
    title = f"t-SNE of {len(latents)} test latents ({latents.shape[1]}-d)"
    if probe_acc is not None:
        title += f"\nlinear probe accuracy {100 * probe_acc:.1f}%"
    ax.set_title(title, fontsize=10)
    ax.legend(markerscale=3)
    ax.set_xticks([]), ax.set_yticks([])
    return _save(fig, out_path)


def generate_samples_grid(images: np.ndarray, labels: np.ndarray, out_path, title: str = "",
                          ncols: int = 8) -> Path:
    """One block of rows per class (cats first) of uint8 samples (N, 32, 32, 3)."""
    blocks = [(name, images[labels == c]) for c, name in enumerate(CLASS_NAMES) if (labels == c).any()]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(ncols * 0.75, sum(
        1 + 0.75 * -(-len(b) // ncols) for _, b in blocks)), squeeze=False)
    for ax, (name, block) in zip(axes[:, 0], blocks):
        ax.imshow(image_grid(block, min(ncols, len(block))), interpolation="nearest")
        ax.set_title(f"{name} ({len(block)})", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def create_diffusion_animation(frames: np.ndarray, frame_labels: list[str], out_path, scale: int = 4,
                               frame_ms: int = 80, hold_last_ms: int = 1500) -> Path:
    """GIF of uint8 frames (T, 32, 32, 3), each upscaled and captioned; the last frame is held."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pictures = []
    for frame, label in zip(frames, frame_labels):
        big = Image.fromarray(frame).resize((32 * scale, 32 * scale), Image.NEAREST)
        canvas = Image.new("RGB", (big.width, big.height + 14), "white")
        canvas.paste(big, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
        pictures.append(canvas)
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    pictures[0].save(out_path, save_all=True, append_images=pictures[1:], duration=durations, loop=0,
                     optimize=False, disposal=1)
    return out_path


def visualize_denoising_steps(frames: np.ndarray, frame_labels: list[str], path_2d: np.ndarray,
                              background_2d: np.ndarray, background_labels: np.ndarray, out_path,
                              title: str = "", axis_labels: tuple[str, str] = ("PC 1", "PC 2")) -> Path:
    """A strip of decoded frames along one trajectory, and that trajectory (path_2d (T, 2)) drawn
    over a 2-D projection of real latents (background_2d (N, 2), coloured by class)."""
    k = len(frames)
    per_row = -(-k // 2)                                       # frames in two rows, projection at right
    fig = plt.figure(figsize=(1.3 * per_row + 5, 4.0))
    grid = fig.add_gridspec(2, per_row + 4)
    for i in range(k):
        ax = fig.add_subplot(grid[i // per_row, i % per_row])
        ax.imshow(frames[i], interpolation="nearest")
        ax.set_title(frame_labels[i], fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[:, per_row:])
    for c, name in enumerate(CLASS_NAMES):
        m = background_labels == c
        ax.scatter(background_2d[m, 0], background_2d[m, 1], s=3, alpha=0.35, c=CLASS_COLORS[c],
                   label=f"test {name}s")
    ax.plot(path_2d[:, 0], path_2d[:, 1], "-", c="black", lw=1, alpha=0.8, label="trajectory")
    ax.scatter(*path_2d[0], marker="o", s=50, c="grey", edgecolors="black", zorder=3, label="start (noise)")
    ax.scatter(*path_2d[-1], marker="*", s=160, c="red", edgecolors="black", zorder=3, label="end (sample)")
    ax.set_xlabel(axis_labels[0]), ax.set_ylabel(axis_labels[1])
    ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def plot_training_curves(metrics_path, out_path) -> Path:
    """Loss per stage over steps from metrics.jsonl (a resumed step's last record wins)."""
    records: dict[str, dict[int, dict]] = {}
    for line in Path(metrics_path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "stage" in r and "step" in r:
                records.setdefault(r["stage"], {})[r["step"]] = r
    stages = sorted(records)
    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(5 * max(len(stages), 1), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        steps = sorted(records[stage])
        # positive losses only (log scale); a key may start late (the discriminator's, say)
        for key in ("loss", "mse", "l1", "ce", "center", "pixel", "perceptual", "matching", "disc"):
            logged = [s for s in steps if key in records[stage][s]]
            if logged:
                ax.plot(logged, [records[stage][s][key] for s in logged], label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step"), ax.set_title(stage)
        ax.legend(fontsize=8)
    return _save(fig, out_path)
