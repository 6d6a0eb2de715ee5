"""Shared fixtures: a tiny trained run (trained once per test session, on the real data)."""

import pytest
import torch

from catdog.config import PRESETS
from catdog.pipeline import run_all

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A `tiny` preset run folder with a trained autoencoder, latent cache and diffusion model."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    return run_all(PRESETS["tiny"], run_dir, figures=False)
