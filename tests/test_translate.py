"""Image-to-image and interpolation (translate.py) against what they must equal: strength 0 is the
reconstruction path, strength 1 is `sample` from the same seed up to the signal alpha_bar_T leaves, the
number of denoiser calls is int(steps * strength), and the end frames of an interpolation are the ends'
own outputs. Run: pytest tests/test_translate.py"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catdog.cli import main
from catdog.config import SampleConfig
from catdog.data import create_cat_dog_dataset
from catdog.metrics import psnr_db
from catdog.run_dir import load_run
from catdog.sample import sample_latents
from catdog.translate import denoiser_calls, translate_latents
from test_ownership import refused

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
SAMPLE = SampleConfig(steps=10, guidance=3.0)


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run.root)


@pytest.fixture(scope="module")
def cats():
    images, labels = create_cat_dog_dataset("test")
    return images[labels == 0][:6]


def test_strength_zero_is_the_refined_reconstruction(run, cats):
    out = run.img2img(cats, np.ones(len(cats), int), 0.0, SAMPLE)
    refined = run.refine_reconstructions(cats, np.ones(len(cats), int), SAMPLE)
    assert np.abs(out.astype(int) - refined).max() <= 1                 # normalise/denormalise rounding
    raw = run.img2img(cats, np.ones(len(cats), int), 0.0, replace(SAMPLE, refiner=False))
    assert np.abs(raw.astype(int) - run.autoencoder.reconstruct_images(cats)).max() <= 1


def test_strength_one_is_a_sample_from_the_same_seed(run, cats):
    """The start differs from the sampler's pure noise by sqrt(ab_T) z_0 - (1 - sqrt(1 - ab_T)) noise; a
    few DDIM steps carry that difference through, so the latents agree to about its size."""
    diffusion, y = run.diffusion, torch.ones(len(cats), dtype=torch.long)
    z0 = run.autoencoder.normalize(run.autoencoder.encode_images(cats))
    ab_t = diffusion.alpha_bar[-1]
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
    start_gap = (ab_t.sqrt() * z0 - (1 - (1 - ab_t).sqrt()) * noise).abs().max().item()
    assert 0 < start_gap < 0.05
    translated = translate_latents(diffusion, z0, y, 1.0, replace(SAMPLE, seed=5), seed=5)
    sampled = sample_latents(diffusion, y, 5, SAMPLE.steps, SAMPLE.guidance)
    assert (translated - sampled).abs().max().item() < 20 * start_gap
    images = run.img2img(cats, np.ones(len(cats), int), 1.0, replace(SAMPLE, seed=5))
    assert np.abs(images.astype(int) - run.generate(np.ones(len(cats), int), replace(SAMPLE, seed=5))).max() <= 3


@pytest.mark.parametrize("sampler,strength", [("ddim", 0.0), ("ddim", 0.3), ("ddim", 0.55), ("ddim", 1.0),
                                              ("ddpm", 0.5)])
def test_denoiser_calls_are_int_steps_times_strength(run, cats, monkeypatch, sampler, strength):
    calls = []
    forward = run.diffusion.model.forward
    monkeypatch.setattr(run.diffusion.model, "forward", lambda *a: calls.append(1) or forward(*a))
    sample = SampleConfig(sampler=sampler, steps=10, guidance=3.0)
    run.img2img(cats, np.ones(len(cats), int), strength, replace(sample, refiner=False))
    n_schedule = run.diffusion.n_steps if sampler == "ddpm" else 10
    assert len(calls) == int(n_schedule * strength) == denoiser_calls(run.diffusion.n_steps, sample, strength)


def test_interpolation_between_seeds_ends_at_each_seeds_sample(run):
    frames = run.interpolate((3, 8), (0, 1), 5, SAMPLE)
    assert frames.shape == (5, 32, 32, 3)
    # one batch of 5 against a batch of 1: matrix products may round differently (one uint8 level, rarely)
    for frame, alone in ((frames[0], run.generate([0], replace(SAMPLE, seed=3))[0]),
                         (frames[-1], run.generate([1], replace(SAMPLE, seed=8))[0])):
        differ = frame.astype(int) != alone
        assert np.abs(frame.astype(int) - alone).max() <= 1 and differ.mean() < 0.005, differ.mean()
    assert len({f.tobytes() for f in frames}) == 5                      # every frame is new


@pytest.mark.skipif(not (PRETRAINED / "diffusion.safetensors").is_file(), reason="pretrained/ not present")
def test_interpolation_between_pictures_ends_at_their_reconstructions(cats):
    """DDIM inversion with the conditional model, then DDIM back: the shipped model returns to each
    picture's reconstruction (measured ~38 dB; a broken inversion lands on another image, < 15 dB)."""
    images, labels = create_cat_dog_dataset("test")
    dog = images[labels == 1][0]
    pretrained = load_run(PRETRAINED)
    frames = pretrained.interpolate((cats[0], dog), (0, 1), 3, SampleConfig(refiner=False))
    recon = pretrained.autoencoder.reconstruct_images(np.stack([cats[0], dog]))
    assert psnr_db(recon[:1], frames[:1]) > 30 and psnr_db(recon[1:], frames[2:]) > 30


def test_img2img_and_interpolate_commands(tiny_run, tmp_path, capsys):
    images, labels = create_cat_dog_dataset("test")
    Image.fromarray(images[0]).resize((120, 90)).save(tmp_path / "cat.jpg")
    Image.fromarray(images[1]).save(tmp_path / "other.png")
    np.savez(tmp_path / "many.npz", images=images[:5])
    run_dir = str(tiny_run.root)
    fast = ["--steps", "5", "--refiner-steps", "2"]
    assert main(["img2img", "--run-dir", run_dir, "--image", str(tmp_path / "cat.jpg"), "--class", "dog",
                 "--strength", "0.6", *fast, "--out", str(tmp_path / "dog.png"), "--npz", str(tmp_path / "dog.npz")]) == 0
    with np.load(tmp_path / "dog.npz") as f:
        assert f["images"].shape == (1, 32, 32, 3) and f["sources"].shape == (1, 32, 32, 3) and f["labels"][0] == 1
    assert main(["img2img", "--run-dir", run_dir, "--image", str(tmp_path / "many.npz"), "--class", "cat",
                 *fast, "--npz", str(tmp_path / "five.npz")]) == 0
    assert np.load(tmp_path / "five.npz")["images"].shape == (5, 32, 32, 3)
    assert main(["interpolate", "--run-dir", run_dir, "--seeds", "1,2", "--frames", "4", *fast,
                 "--out", str(tmp_path / "strip.png"), "--gif", str(tmp_path / "strip.gif")]) == 0
    assert Image.open(tmp_path / "strip.gif").n_frames == 4
    assert main(["interpolate", "--run-dir", run_dir, "--images", f"{tmp_path / 'cat.jpg'},{tmp_path / 'other.png'}",
                 "--classes", "cat,dog", "--frames", "3", *fast, "--out", str(tmp_path / "pics.png")]) == 0
    assert Image.open(tmp_path / "pics.png").size[1] < Image.open(tmp_path / "pics.png").size[0]


@pytest.mark.parametrize("flags,message", [
    (["--strength", "1.5"], "--strength"), (["--strength", "nan"], "--strength"), (["--strength", "-0.1"], "--strength"),
    (["--image", "{tmp}/garbage.png"], "not an image"), (["--image", "{tmp}/missing.png"], "no such file"),
    (["--class", "horse"], "unknown class"), (["--out", "{tmp}/exists.png"], "exists; add --force"),
])
def test_img2img_bad_input_is_one_line_and_status_2(tiny_run, tmp_path, capsys, flags, message):
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    (tmp_path / "exists.png").write_bytes(b"keep me")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "ok.png")
    args = {"--image": str(tmp_path / "ok.png"), "--class": "dog", "--out": str(tmp_path / "new.png")}
    flags = [f.format(tmp=tmp_path) for f in flags]
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = value
    refused(capsys, ["img2img", "--run-dir", str(tiny_run.root)] + [x for kv in args.items() for x in kv], message)
    assert (tmp_path / "exists.png").read_bytes() == b"keep me" and not (tmp_path / "new.png").exists()
