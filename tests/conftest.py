"""Shared fixtures: a tiny trained run (trained once per test session, on the real data)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from catdog.config import PRESETS
from catdog.data import create_cat_dog_dataset
from catdog.pipeline import run_all

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A `tiny` preset run folder with a trained autoencoder, latent cache and diffusion model."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    return run_all(PRESETS["tiny"], run_dir, figures=False)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_data):
    """A second `tiny` run, on small_data and with another seed: its files are foreign to tiny_run's."""
    config = PRESETS["tiny"]
    config = replace(config, run=replace(config.run, seed=1))
    return run_all(config, tmp_path_factory.mktemp("small_run"), data=small_data, figures=False)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """A data file of 16 training images and 8 test images of the real data, half of each class."""
    path = tmp_path_factory.mktemp("small_data") / "small.npz"
    arrays = {}
    for split, per_class in (("train", 8), ("test", 4)):
        images, labels = create_cat_dog_dataset(split)
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in (0, 1)])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
    np.savez(path, **arrays)
    return path
