"""Figures of a tiny trained run: files decode with the expected sizes, and the trajectory figures
show the sampler's real trajectory. Run: pytest tests/test_figures.py"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from catdog.cli import main
from catdog.data import to_uint8
from catdog.figures import TRAJECTORY_SEED_OFFSET, trajectory, write_all_figures
from catdog.config import SampleConfig
from catdog.run_dir import load_run
from catdog.sample import sample_latents
from catdog.viz import plot_training_curves


@pytest.fixture(scope="module")
def figures(tiny_run):
    return {p.name: p for p in write_all_figures(tiny_run, sample=SAMPLE, per_class=4, tsne_points=64)}


SAMPLE = SampleConfig(steps=5)


def test_every_figure_is_written_and_decodes(figures, tiny_run):
    expected = {"reconstructions.png", "latent_tsne.png", "samples.png", "nearest_training.png", "denoising_cat.gif",
                "denoising_dog.gif", "denoising_path_cat.png", "denoising_path_dog.png", "training_curves.png",
                "translations.png"}
    assert expected == set(figures)
    for path in figures.values():
        with Image.open(path) as im:
            im.load()
            assert im.size[0] >= 100 and im.size[1] >= 100, path


def test_animation_shows_the_real_reverse_process(figures, tiny_run):
    steps = SAMPLE.steps
    with Image.open(figures["denoising_dog.gif"]) as gif:
        assert gif.n_frames == steps + 1
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"), dtype=np.float64)
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("RGB"), dtype=np.float64)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert np.abs(first - last).mean() > 0.5                    # the picture changes along the way
    assert durations[-1] > 5 * durations[0]                     # the last frame is held


def test_trajectory_ends_at_the_sampled_latent_and_image(tiny_run):
    """Oracle: the sampler called directly with the same seed."""
    run = load_run(tiny_run.root)
    autoencoder, diffusion = run.autoencoder, run.diffusion
    seed = SAMPLE.seed + TRAJECTORY_SEED_OFFSET + 1
    z_path, frames = trajectory(autoencoder, diffusion, 1, seed, SAMPLE)
    z = sample_latents(diffusion, torch.tensor([1]), seed, SAMPLE.steps, SAMPLE.guidance)
    torch.testing.assert_close(z_path[-1], z[0])
    np.testing.assert_array_equal(frames[-1], to_uint8(autoencoder.decode_latents(z))[0])
    assert frames.shape == (SAMPLE.steps + 1, 32, 32, 3)
    # it starts at the sampler's pure noise, far from where it ends
    torch.testing.assert_close(z_path[0], torch.randn((1, z.shape[1]), generator=torch.Generator().manual_seed(seed))[0])
    assert (z_path[0] - z_path[-1]).norm() > 0.1 * z.shape[1] ** 0.5


@pytest.mark.slow
def test_visualize_command_rewrites_the_figures(tiny_run, capsys):
    assert main(["visualize", "--run-dir", str(tiny_run.root), "--steps", "5"]) == 0
    assert "samples.png" in capsys.readouterr().out


def test_training_curves_with_a_loss_that_starts_late(tmp_path):
    """The discriminator's loss is logged only once the adversarial term is on."""
    rows = [{"stage": "autoencoder", "step": s, "loss": 1.0 / s, "mse": 0.5 / s} for s in (10, 20)]
    rows += [{"stage": "autoencoder", "step": 30, "loss": 0.03, "mse": 0.01, "adv": -2.0, "disc": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert Image.open(out).size[0] > 100


def test_translation_figure_shows_the_run_s_own_img2img(figures, tiny_run):
    """Its first row: the first test cat, then that cat turned into a dog at each strength by Run.img2img."""
    from catdog.data import create_cat_dog_dataset
    from catdog.figures import N_TRANSLATED_PER_CLASS, TRANSLATION_STRENGTHS
    with Image.open(figures["translations.png"]) as im:
        assert im.size[0] > im.size[1] * (1 + len(TRANSLATION_STRENGTHS)) / (2 * N_TRANSLATED_PER_CLASS) * 0.8
    images, labels = create_cat_dog_dataset("test")
    cat = images[labels == 0][:1]
    run = load_run(tiny_run.root)
    outputs = [run.img2img(cat, [1], s, SAMPLE)[0] for s in TRANSLATION_STRENGTHS]
    assert len({o.tobytes() for o in outputs}) == len(TRANSLATION_STRENGTHS)      # each strength differs
