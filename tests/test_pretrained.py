"""The shipped pretrained/ folder: it loads, and samples the same images as before every refactor.
Oracle: pixels of a fixed-seed sample recorded when the folder was exported (the prior of session 16,
trained on shifted latents; the decoder stage's model of session 12; the autoencoder of commit 9fb6fcb's
export). Run: pytest tests/test_pretrained.py"""

from pathlib import Path

import numpy as np
import pytest

from catdog.checkpoint import load_weights
from catdog.config import SampleConfig, config_from_dict, config_to_dict
from catdog.errors import UserError
from catdog.run_dir import load_run
from catdog.sample import generate_images

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
# (image, row, column) -> RGB of generate_images(labels=[1] * 8 + [0] * 8, seed 0, DDIM 50, guidance 6)
PINNED = {(0, 0, 0): [187, 188, 185], (0, 16, 16): [194, 113, 71], (3, 8, 24): [166, 132, 102],
          (7, 31, 31): [203, 205, 213], (8, 0, 31): [200, 204, 206], (11, 20, 5): [154, 139, 125],
          (15, 16, 16): [230, 213, 212], (15, 31, 0): [226, 225, 213]}


def test_pretrained_samples_the_pinned_pixels():
    """Bit-identical on the machine that pinned them; +-1 allows another CPU's float rounding."""
    run = load_run(PRETRAINED)
    d = SampleConfig()
    assert (d.sampler, d.steps, d.seed) == ("ddim", 50, 0)   # the defaults pinned here (guidance was 6 then)
    images = generate_images(run.autoencoder, run.diffusion, [1] * 8 + [0] * 8, d.seed, d.steps, guidance=6.0)
    for (i, r, c), rgb in PINNED.items():
        np.testing.assert_allclose(images[i, r, c].astype(int), rgb, atol=1, rtol=0, err_msg=str((i, r, c)))


def test_weight_files_of_earlier_versions_load_and_retired_options_are_refused():
    """pretrained/ was written before sampling settings left the config: those keys are dropped.
    A retired option at its 'off' value loads; at any other value the file is refused by name."""
    _, stored, _ = load_weights(PRETRAINED / "autoencoder.safetensors")
    assert "guidance" in stored["run"]                               # written by the earlier version
    config = config_from_dict(stored)
    assert "guidance" not in config_to_dict(config)["run"]
    assert config_from_dict({**stored, "ae": {**stored["ae"], "ssim_weight": 0.0, "ae_translate_px": 0}}) == config
    with pytest.raises(UserError, match="ssim_weight"):
        config_from_dict({**stored, "ae": {**stored["ae"], "ssim_weight": 0.1}})
    assert config_from_dict({**stored, "diffusion": {**stored["diffusion"], "unet_dropout": 0.0}}) == config
    with pytest.raises(UserError, match="unet_dropout, an option removed after commit fc0d0a7"):
        config_from_dict({**stored, "diffusion": {**stored["diffusion"], "unet_dropout": 0.1}})
    assert config_from_dict({**stored, "diffusion": {**stored["diffusion"], "loss_weighting": "min_snr"}}) == config
    with pytest.raises(UserError, match="loss_weighting, an option removed after commit d05954f"):
        config_from_dict({**stored, "diffusion": {**stored["diffusion"], "loss_weighting": "truncated_v"}})
    assert config_from_dict({**stored, "diffusion": {**stored["diffusion"], "self_condition": False}}) == config
    with pytest.raises(UserError, match="self_condition, an option removed after commit 15a938b"):
        config_from_dict({**stored, "diffusion": {**stored["diffusion"], "self_condition": True}})
    with pytest.raises(UserError, match="unknown config field"):
        config_from_dict({**stored, "ae": {**stored["ae"], "no_such_field": 1}})
